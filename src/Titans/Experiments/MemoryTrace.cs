using Titans.Memory;
using Titans.Models;
using static TorchSharp.torch;

namespace Titans.Experiments;

/// <summary>
/// One memory block over one window of a stream: the mean gates of the tokens it wrote there (θ the inner learning
/// rate, α the forgetting, η the surprise decay; means over tokens and heads) and the Frobenius norms of its weights
/// W^(l) and momentum S^(l) at the window's end, one per memory layer. Per head: the mean θ and α over the window's
/// tokens, and log₁₀ of the retention since the stream's first token, log₁₀ Π_t (1 − α_t): the share of a weight written
/// at token 0 that forgetting alone leaves by the window's end (with channel-wise forgetting, the mean over channels).
/// </summary>
public sealed record MemoryBlockTrace(int Block, double Theta, double Alpha, double Eta, IReadOnlyList<double> WeightNorms, IReadOnlyList<double> MomentumNorms)
{
    public IReadOnlyList<double> HeadTheta { get; init; } = Array.Empty<double>();
    public IReadOnlyList<double> HeadAlpha { get; init; } = Array.Empty<double>();
    public IReadOnlyList<double> HeadLog10Retention { get; init; } = Array.Empty<double>();
}

/// <summary>One window [Start, End) of a traced stream: the model's mean next-token loss there and each memory block's trace.</summary>
public sealed record MemoryTraceWindow(long Start, long End, double Loss, IReadOnlyList<MemoryBlockTrace> Blocks);

/// <summary>A traced stream: ‖W_0^(l)‖ of each memory block (the state every sequence starts from) and the windows in order.</summary>
public sealed record MemoryTraceResult(IReadOnlyList<IReadOnlyList<double>> InitialWeightNorms, IReadOnlyList<MemoryTraceWindow> Windows);

/// <summary>
/// Looks inside the memory while a model streams one long sequence: how its gates and the size of its state evolve with
/// the position. A model extrapolates in length only where its memory's state stays like the states it saw in training;
/// this shows where it does not (for example weights that keep shrinking under forgetting long after the training length).
/// </summary>
public static class MemoryTrace
{
    public static MemoryTraceResult Run(TitansLanguageModel model, long[] tokens, int window)
    {
        if (window <= 0) throw new ArgumentOutOfRangeException(nameof(window), "The window must be positive.");
        if (tokens.Length < 2) throw new ArgumentException("A trace needs at least two tokens.", nameof(tokens));
        var memories = model.Blocks.Select((b, i) => (Index: i, Memory: b.Memory)).Where(m => m.Memory is not null)
            .Select(m => (m.Index, Memory: m.Memory!)).ToArray();
        if (memories.Length == 0)
            throw new ArgumentException($"{ArchitectureNames.Display(model.Config)} has no neural memory to trace.", nameof(model));

        // Per block and head: sums of θ, α, η over the current window, and Σ log(1 − α) since token 0; per block, the
        // window's token count (the same for every head).
        var sums = memories.Select(m => new double[m.Memory.Config.Heads, 3]).ToArray();
        var counts = new double[memories.Length];
        var logRetention = memories.Select(m => new double[m.Memory.Config.Heads]).ToArray();
        for (int m = 0; m < memories.Length; m++)
        {
            int slot = m;
            memories[m].Memory.GateObserver = gates =>
            {
                using var scope = NewDisposeScope();
                var byToken = new long[] { 0, 2 };                                   // [B, H, T] → [H]
                var channels = new long[] { -1 };                                    // [B, H, T, C] → [B, H, T]
                Tensor layerDecay = gates.LayerLogDecay(0);
                double[] theta = PerHead(gates.Theta.sum(byToken));
                double[] alpha = PerHead((1 - layerDecay.exp()).mean(channels).sum(byToken));
                double[] eta = PerHead(gates.LogEta.exp().sum(byToken));
                double[] retained = PerHead(layerDecay.mean(channels).sum(byToken).div(gates.Theta.shape[0]));
                counts[slot] += gates.Theta.shape[0] * gates.Theta.shape[2];
                for (int h = 0; h < theta.Length; h++)
                {
                    sums[slot][h, 0] += theta[h];
                    sums[slot][h, 1] += alpha[h];
                    sums[slot][h, 2] += eta[h];
                    logRetention[slot][h] += retained[h];
                }
            };
        }
        bool training = model.training;
        model.eval();
        ModelState? state = null;
        try
        {
            using var noGrad = no_grad();
            using var all = tensor(tokens, new long[] { 1, tokens.Length }, device: model.Device);
            IReadOnlyList<double>[] initial;
            using (NewDisposeScope()) initial = memories.Select(m => Norms(m.Memory.InitialState(1).Memory.Weights)).ToArray();
            var windows = new List<MemoryTraceWindow>();
            for (long start = 0; start < tokens.Length; start += window)
            {
                using var scope = NewDisposeScope();
                long take = Math.Min(window, tokens.Length - start);
                foreach (var blockSums in sums) Array.Clear(blockSums);
                Array.Clear(counts);
                var (logits, next) = model.Forward(all.narrow(1, start, take), state);
                state?.Dispose();
                state = next;
                scope.Detach(next.Tensors);
                // Position t predicts token t + 1; the last token of the stream predicts nothing.
                long scored = Math.Min(take, tokens.Length - 1 - start);
                double loss = scored <= 0 ? double.NaN : nn.functional.cross_entropy(logits[0].narrow(0, 0, scored),
                    all[0].narrow(0, start + 1, scored)).item<float>();
                var blocks = memories.Select((m, i) =>
                {
                    var memory = m.Memory.CurrentMemory(state.Blocks[m.Index].Memory!);
                    int heads = sums[i].GetLength(0);
                    double Mean(int gate, int head) => sums[i][head, gate] / Math.Max(1, counts[i]);
                    double MeanOverHeads(int gate) => Enumerable.Range(0, heads).Average(h => Mean(gate, h));
                    return new MemoryBlockTrace(m.Index, MeanOverHeads(0), MeanOverHeads(1), MeanOverHeads(2), Norms(memory.Weights), Norms(memory.Momentum))
                    {
                        HeadTheta = Enumerable.Range(0, heads).Select(h => Mean(0, h)).ToArray(),
                        HeadAlpha = Enumerable.Range(0, heads).Select(h => Mean(1, h)).ToArray(),
                        HeadLog10Retention = logRetention[i].Select(r => r / Math.Log(10)).ToArray(),
                    };
                }).ToList();
                windows.Add(new MemoryTraceWindow(start, start + take, loss, blocks));
            }
            return new MemoryTraceResult(initial, windows);
        }
        finally
        {
            state?.Dispose();
            foreach (var m in memories) m.Memory.GateObserver = null;
            model.train(training);
        }
    }

    /// <summary>A per-head vector [H] as doubles, whatever the model's float type.</summary>
    static double[] PerHead(Tensor values) => values.to_type(ScalarType.Float64).data<double>().ToArray();

    static IReadOnlyList<double> Norms(IEnumerable<Tensor> tensors)
    {
        using var scope = NewDisposeScope();
        return tensors.Select(t => (double)t.norm().item<float>()).ToArray();
    }
}
