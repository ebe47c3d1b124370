using TorchSharp;
using Titans.Layers;
using Titans.Memory;
using Titans.Models;
using static TorchSharp.torch;
using static Titans.Tests.TestTensors;

namespace Titans.Tests.Models;

/// <summary>MAC (docs/method.md §4.1) follows the paper's order: read, attend, write the attention output, gate; or writes the segment (the ablation).</summary>
public class MemoryAsContextTests
{
    static MacBlock Build(int convKernel = 4, MacWrite write = MacWrite.AttentionOutput)
    {
        manual_seed(3);
        var config = new TitansConfig
        {
            Architecture = Architecture.Mac, ModelDim = 16, Heads = 2, SegmentLength = 8, PersistentTokens = 3, MacWrite = write,
            Memory = new NeuralMemoryConfig { Heads = 2, Depth = 2, Expansion = 2, ChunkSize = 4, ConvKernel = convKernel },
        };
        var block = new MacBlock("block", config.Validate());
        block.to(F64);
        return block;
    }

    /// <summary>
    /// The segment loop written out with the memory and attention of the block: segment by segment, read with the memory
    /// of the segment's start, attend with a fresh context, then write either the attention output (the paper) or the
    /// segment itself. The read is of the segment's start either way, so writing the segment before attending (the
    /// order the paper's MAC does not have) computes the same as writing it after: what is written is what differs.
    /// </summary>
    static (Tensor Output, MemoryWeights Memory) Reference(MacBlock block, Tensor x, MacWrite write)
    {
        var memory = block.Memory!;
        var state = memory.InitialState(x.shape[0], F64);
        IReadOnlyList<Tensor> start = state.Memory.Weights;
        Tensor? conv = null;
        var outputs = new List<Tensor>();
        for (long s = 0; s < x.shape[1]; s += 8)
        {
            Tensor segment = x.narrow(1, s, Math.Min(8, x.shape[1] - s));
            (Tensor read, conv) = memory.Read(segment, start, conv);
            Tensor remembered;
            Tensor attended;
            if (write == MacWrite.SegmentInput)
            {
                (remembered, state) = memory.Forward(segment, state);
                attended = block.Attention!.Forward(segment, read, null).Output;
            }
            else
            {
                attended = block.Attention!.Forward(segment, read, null).Output;
                (remembered, state) = memory.Forward(RmsNorm.Normalize(attended), state);
            }
            outputs.Add(attended * block.MemoryOutNorm!.forward(remembered).sigmoid());
            start = state.Memory.Weights;
        }
        return (cat(outputs, 1), memory.CurrentMemory(state));
    }

    [Theory]
    [InlineData(MacWrite.AttentionOutput, 4)]
    [InlineData(MacWrite.SegmentInput, 4)]
    [InlineData(MacWrite.AttentionOutput, 0)]
    public void TheBatchedCallEqualsTheSegmentBySegmentLoop(MacWrite write, int convKernel)
    {
        // Pieces that start and end inside segments (so the attention cache and pending memory tokens carry over),
        // span several segments, or are one token: outputs, every state tensor and every parameter's gradient.
        using var scope = NewDisposeScope();
        var block = Build(convKernel, write);
        Tensor x = Normal(Seeded(8), 2, 43, 16), probe = Normal(Seeded(9), 2, 43, 16);
        (Tensor Output, Tensor[] State, IReadOnlyList<(string, Tensor?)> Gradients) Run(bool batched)
        {
            block.zero_grad();
            var outputs = new List<Tensor>();
            MacBlockState? state = null;
            foreach (var (start, size) in new (long, long)[] { (0, 3), (3, 18), (21, 1), (22, 2), (24, 19) })
            {
                Tensor piece = x.narrow(1, start, size);
                var (output, next) = batched ? block.MemoryAsContext(piece, state) : block.MemoryAsContextBySegment(piece, state);
                outputs.Add(output);
                state = next;
            }
            Tensor all = cat(outputs, 1);
            (all * probe).sum().backward();
            var gradients = block.named_parameters().Select(p => (p.name, p.parameter.grad?.clone())).ToList();
            return (all.detach(), state!.Tensors.Select(t => t.detach()).ToArray(), gradients);
        }
        // Without a gradient (the memory's C# input path and inference kernel): the same again.
        using (no_grad())
        {
            (Tensor, Tensor[]) Infer(bool batched)
            {
                var outputs = new List<Tensor>();
                MacBlockState? state = null;
                foreach (var (start, size) in new (long, long)[] { (0, 3), (3, 18), (21, 1), (22, 2), (24, 19) })
                {
                    var (output, next) = batched ? block.MemoryAsContext(x.narrow(1, start, size), state) : block.MemoryAsContextBySegment(x.narrow(1, start, size), state);
                    outputs.Add(output);
                    state = next;
                }
                return (cat(outputs, 1), state!.Tensors.ToArray());
            }
            var (slow, slowState) = Infer(batched: false);
            var (fast, fastState) = Infer(batched: true);
            AssertClose(slow, fast, 1e-10, "MAC outputs without a gradient");
            for (int i = 0; i < slowState.Length; i++) AssertClose(slowState[i], fastState[i], 1e-10, $"state tensor {i} without a gradient");
        }
        var (expected, expectedState, expectedGradients) = Run(batched: false);
        var (actual, actualState, actualGradients) = Run(batched: true);
        AssertClose(expected, actual, 1e-10, "MAC outputs");
        Assert.Equal(expectedState.Length, actualState.Length);
        for (int i = 0; i < expectedState.Length; i++) AssertClose(expectedState[i], actualState[i], 1e-10, $"state tensor {i}");
        AssertClose(expectedGradients, actualGradients, 1e-10, "parameter gradients");
        Assert.Contains(actualGradients, g => g.Item2 is Tensor t && t.abs().max().item<double>() > 1e-6);
    }

    [Fact]
    public void MemoryIsWrittenWithTheAttentionOutput()
    {
        using var scope = NewDisposeScope();
        var block = Build();
        Tensor x = Normal(Seeded(4), 2, 21, 16);
        var (output, state) = block.MemoryAsContext(x, null);
        var memory = block.Memory!.CurrentMemory(state.Memory!);

        var (expected, expectedMemory) = Reference(block, x, MacWrite.AttentionOutput);
        AssertClose(expected, output, 1e-12, "MAC outputs");
        AssertClose(expectedMemory, memory, 1e-12, "memory after the last token");

        // The control: the same loop writing the segment gives other outputs and another memory, so the comparison
        // above can tell the two writes apart.
        var (other, otherMemory) = Reference(block, x, MacWrite.SegmentInput);
        Assert.True((other - output).abs().max().item<double>() > 1e-6, "writing the segment must differ");
        Assert.True((otherMemory.Weights[0] - memory.Weights[0]).abs().max().item<double>() > 1e-6);
    }

    [Fact]
    public void TheSegmentWriteStoresTheSegmentInput()
    {
        // MacWrite.SegmentInput: the same weights, the memory written with the segment's tokens (as LMM writes them).
        using var scope = NewDisposeScope();
        var block = Build(write: MacWrite.SegmentInput);
        Tensor x = Normal(Seeded(4), 2, 21, 16);
        var (output, state) = block.MemoryAsContext(x, null);
        var (expected, expectedMemory) = Reference(block, x, MacWrite.SegmentInput);
        AssertClose(expected, output, 1e-12, "MAC outputs");
        AssertClose(expectedMemory, block.Memory!.CurrentMemory(state.Memory!), 1e-12, "memory after the last token");
        var (paper, _) = Reference(block, x, MacWrite.AttentionOutput);
        Assert.True((paper - output).abs().max().item<double>() > 1e-6, "the paper's write must differ");
    }

    [Fact]
    public void TheMemoryIsWrittenWithTheNormalizedAttentionOutput()
    {
        // The scale of the attention output does not reach the memory: ×10³ and ×10⁶ store the same (both far above the
        // norm's epsilon). Written raw, that scale once drove the inner loop to divergence in training.
        using var scope = NewDisposeScope();
        var block = Build();
        Tensor x = Normal(Seeded(7), 2, 21, 16);
        var outProjection = block.named_parameters().First(p => p.name == "attention.o_proj.weight").parameter;
        MemoryWeights Stored(double scale)
        {
            using (no_grad()) outProjection.mul_(scale);
            return block.Memory!.CurrentMemory(block.MemoryAsContext(x, null).State.Memory!);
        }
        var before = Stored(1e3);
        var after = Stored(1e3);
        AssertClose(before, after, 1e-9, "memory with the attention output scaled by 10³ and by 10⁶");
    }

    [Fact]
    public void LaterSegmentsSeeEarlierOnesOnlyThroughTheMemory()
    {
        // Attention is reset at each segment: with the memory's learning rate and forgetting at ~0, a change in segment 1 can reach
        // segment 2 only through the (frozen) memory, i.e. not at all; with learning, it must. (Without the memory's
        // short convolution, which by design looks a few tokens back across a segment boundary.)
        using var scope = NewDisposeScope();
        var block = Build(convKernel: 0);
        Tensor x = Normal(Seeded(5), 1, 16, 16), changed = x.clone();
        changed[.., 2] = Normal(Seeded(6), 1, 16);
        Tensor Second(Tensor input) => block.MemoryAsContext(input, null).Output.narrow(1, 8, 8);
        Assert.True((Second(x) - Second(changed)).abs().max().item<double>() > 1e-6, "the memory carries segment 1 on");
        using (no_grad())
            foreach (var (name, p) in block.named_parameters())
                if (name.EndsWith("gate_bias")) p.fill_(-60.0); // θ, η, α = σ(−60)·… ≈ 0: the memory stays W_0
        AssertClose(Second(x), Second(changed), 1e-12, "second segment without memory learning");
    }
}
