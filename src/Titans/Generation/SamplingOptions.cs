namespace Titans.Generation;

/// <summary>
/// How the next token is drawn: logits / <see cref="Temperature"/>, then only the <see cref="TopK"/> most likely
/// tokens (0: all), then the smallest set whose probability reaches <see cref="TopP"/> (1: all). Temperature 0 is greedy.
/// </summary>
public sealed record SamplingOptions(double Temperature = 0.8, int TopK = 0, double TopP = 0.95, long Seed = 1)
{
    public const double MinTemperature = 1e-3;

    public SamplingOptions Validate()
    {
        if (!(Temperature >= 0) || !double.IsFinite(Temperature)) throw new ArgumentException($"Temperature must be 0 (greedy) or positive, got {Temperature}.", nameof(Temperature));
        // Below it the logits divided by the temperature overflow float64; 0 is the greedy choice they would approach.
        if (Temperature is > 0 and < MinTemperature)
            throw new ArgumentException($"Temperature must be 0 (greedy) or at least {MinTemperature}, got {Temperature}.", nameof(Temperature));
        if (TopK < 0) throw new ArgumentException($"Top-k must be 0 (off) or positive, got {TopK}.", nameof(TopK));
        if (!(TopP is > 0 and <= 1)) throw new ArgumentException($"Top-p must lie in (0, 1], got {TopP}.", nameof(TopP));
        return this;
    }
}
