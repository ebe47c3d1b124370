namespace Titans.Checkpoints;

/// <summary>
/// The kinds of safetensors file this project writes, by their <c>format</c> metadata, and what each is: a loader that
/// is given the wrong kind names what it was given and what it needs. Language models and forecasters each know only
/// this list, not each other.
/// </summary>
public static class CheckpointFormats
{
    /// <summary>A training checkpoint of a language model (weights and optimizer state; `train`, `task train`, `dna pretrain`).</summary>
    public const string LanguageModel = "titans-checkpoint/1";
    /// <summary>A language model's weights alone (`export`): evaluates and generates, does not resume.</summary>
    public const string Weights = "titans-weights/1";
    /// <summary>A forecaster (`forecast train`).</summary>
    public const string Forecaster = "titans-forecaster/1";

    /// <summary>What a file of <paramref name="format"/> is, for an error message: "a forecaster checkpoint (titans-forecaster/1)".</summary>
    public static string Describe(string format) => format switch
    {
        LanguageModel => $"a language model checkpoint ({format})",
        Weights => $"a language model's exported weights ({format})",
        Forecaster => $"a forecaster checkpoint ({format}), made by `forecast train`",
        _ => $"of checkpoint format '{format}'",
    };
}
