using Titans.Text;

namespace Titans.Tasks.LongContext;

/// <summary>
/// Multi-query associative recall (MQAR, after Zoology, Arora et al., 2023) in text: <see cref="Pairs"/> key-value pairs
/// "KQZ=38 " (three capital letters, two digits; keys distinct and absent from the haystack) at the requested depth,
/// then "Recall: " and every key again in a new order, each followed by its value, which is scored. Zoology's MQAR has
/// no filler; here real text separates the pairs from the queries, so recall has to reach back across it. Accuracy is
/// the fraction of values recalled.
/// </summary>
public sealed class MqarTask : ILongContextTask
{
    readonly Haystack haystack;
    readonly ExampleAssembler assembler;

    public MqarTask(ITokenizer tokenizer, Haystack haystack, int pairs = 8)
    {
        if (pairs is < 1 or > 1000) throw new ArgumentException($"MQAR needs 1 to 1000 pairs, got {pairs}.");
        Pairs = pairs;
        this.haystack = haystack;
        assembler = new ExampleAssembler(Name, tokenizer, haystack);
        var (block, tail, _) = Build(Enumerable.Range(0, pairs).Select(i => ("WWW", "00")).ToList(), Enumerable.Range(0, pairs).ToList());
        MinimumLength = assembler.Count(block) + assembler.Count(tail);
        assembler.MinimumLength = MinimumLength;
    }

    public int Pairs { get; }
    public string Name => "mqar";
    public string Description => $"MQAR: {Pairs} key-value pairs, filler from {haystack.Name}, then all {Pairs} queries";
    public bool HasDepth => true;
    public int MinimumLength { get; }

    public TaskExample Generate(int length, double depth, Random random, bool evaluation)
    {
        if (depth is < 0 or > 1 || double.IsNaN(depth)) throw new ArgumentException($"The pairs' depth must lie in [0, 1], got {depth}.");
        var keys = new HashSet<string>();
        var pairs = new List<(string Key, string Value)>();
        while (pairs.Count < Pairs)
        {
            string key = new(Enumerable.Range(0, 3).Select(_ => (char)('A' + random.Next(26))).ToArray());
            if (!keys.Add(key) || haystack.Contains(key)) continue;
            pairs.Add((key, random.Next(100).ToString("00")));
        }
        var order = Enumerable.Range(0, Pairs).OrderBy(_ => random.Next()).ToList();
        var (block, tail, facts) = Build(pairs, order);
        return assembler.Assemble(length, depth, new[] { (depth, (IReadOnlyList<Piece>)block) }, tail, random, evaluation, facts, "Recall:");
    }

    static (List<Piece> Block, List<Piece> Tail, List<string> Facts) Build(IReadOnlyList<(string Key, string Value)> pairs, IReadOnlyList<int> order)
    {
        var block = new List<Piece>();
        foreach (var (key, value) in pairs) { block.Add(new Piece(key + "=")); block.Add(new Piece(value)); block.Add(new Piece(" ")); }
        var tail = new List<Piece> { new("Recall:") };
        foreach (int i in order) { tail.Add(new Piece(" " + pairs[i].Key + "=")); tail.Add(new Piece(pairs[i].Value, IsAnswer: true)); }
        return (block, tail, pairs.Select(p => $"{p.Key}={p.Value}").ToList());
    }
}
