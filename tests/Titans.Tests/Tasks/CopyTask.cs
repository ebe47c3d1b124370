using Titans.Training;
using static TorchSharp.torch;

namespace Titans.Tests.Tasks;

/// <summary>
/// The tests' copy task. Copy: <see cref="Length"/> distinct symbols drawn from [0, <see cref="Symbols"/>), a delimiter (token
/// <see cref="Symbols"/>), then the same symbols again. Only the copy is scored (the delimiter predicts the first
/// symbol, and so on). Attention can solve it by looking a fixed distance back; a memory by storing each symbol
/// under its predecessor. A model that ignores the context cannot beat about ln(<see cref="Symbols"/>) nats.
/// </summary>
sealed record CopyTask(int Length = 8, int Symbols = 16)
{
    public int SequenceLength => 2 * Length + 1;

    public TrainingBatch Sample(long batch, Generator generator)
    {
        if (Length < 1 || Length > Symbols)
            throw new ArgumentException($"The copy task needs 1 ≤ length ≤ symbols, got {Length} of {Symbols}.");
        using var scope = NewDisposeScope();
        Tensor symbols = rand(batch, Symbols, generator: generator).argsort(-1).narrow(1, 0, Length);      // distinct
        Tensor sequence = cat(new[] { symbols, full(batch, 1, Symbols, dtype: ScalarType.Int64), symbols }, 1);
        Tensor scored = zeros(batch, SequenceLength - 1, dtype: ScalarType.Bool);
        scored.narrow(1, Length, Length).fill_(true);
        var result = new TrainingBatch(sequence.narrow(1, 0, SequenceLength - 1).contiguous(),
            sequence.narrow(1, 1, SequenceLength - 1).contiguous(), scored);
        scope.MoveToOuter(result.Tokens, result.Targets, scored);
        return result;
    }
}
