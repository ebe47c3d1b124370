namespace Titans.Dna;

/// <summary>
/// An order-k Markov model of nucleotides: counts of each base after each k-base context in a training genome,
/// Krichevsky–Trofimov smoothed (add one half). It is the reference a neural model's bits per nucleotide has to beat:
/// order 0 is the base composition, higher orders capture codon and k-mer statistics.
/// </summary>
public sealed class MarkovModel
{
    /// <summary>The highest order: 5^(k+1) counts (about 2 million ints at order 8).</summary>
    public const int MaxOrder = 8;
    const int Symbols = 5; // A C G T N, tokens 2..6

    public int Order { get; }
    readonly int[] counts;
    readonly int contexts;

    MarkovModel(int order)
    {
        if (order is < 0 or > MaxOrder) throw new ArgumentOutOfRangeException(nameof(order), order, $"The Markov order must be 0 to {MaxOrder}.");
        Order = order;
        contexts = (int)Math.Pow(Symbols, order);
        counts = new int[contexts * Symbols];
    }

    /// <summary>Counts every nucleotide of <paramref name="tokens"/> (nucleotide tokens) after its k predecessors.</summary>
    public static MarkovModel Fit(ReadOnlySpan<long> tokens, int order)
    {
        var model = new MarkovModel(order);
        model.Walk(tokens, (context, symbol) => model.counts[context * Symbols + symbol]++);
        return model;
    }

    /// <summary>Mean bits per nucleotide of <paramref name="tokens"/> under the model (separators and padding are skipped).</summary>
    public double BitsPerNucleotide(ReadOnlySpan<long> tokens)
    {
        double bits = 0;
        long count = 0;
        Walk(tokens, (context, symbol) =>
        {
            int row = context * Symbols, total = 0;
            for (int s = 0; s < Symbols; s++) total += counts[row + s];
            bits -= Math.Log2((counts[row + symbol] + 0.5) / (total + 0.5 * Symbols));
            count++;
        });
        if (count == 0) throw new ArgumentException("There are no nucleotides to score.", nameof(tokens));
        return bits / count;
    }

    /// <summary>
    /// Visits every nucleotide with the index of its k predecessors (records are read as one stream, separators
    /// skipped; the first k nucleotides see a context padded with A, negligible over a genome).
    /// </summary>
    void Walk(ReadOnlySpan<long> tokens, Action<int, int> visit)
    {
        int context = 0;
        foreach (long token in tokens)
        {
            if (token < 2) continue;
            if (token > 6) throw new ArgumentOutOfRangeException(nameof(tokens), $"Token {token} is not a nucleotide token.");
            int symbol = (int)token - 2;
            visit(context, symbol);
            if (contexts > 1) context = context * Symbols % contexts + symbol;
        }
    }
}
