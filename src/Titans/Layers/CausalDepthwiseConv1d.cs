using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Titans.Layers;

/// <summary>
/// Causal depthwise 1-D convolution over time (TITANS.md §2: after the q/k/v projections, kernel 4). Each channel has
/// its own kernel; output t sees inputs t−K+1..t. The last K−1 inputs are the streaming cache, so a sequence fed in
/// pieces gives the same outputs as fed whole.
/// </summary>
public sealed class CausalDepthwiseConv1d : nn.Module
{
    readonly Parameter weight; // [channels, 1, kernel]
    public int Channels { get; }
    public int Kernel { get; }

    public CausalDepthwiseConv1d(string name, int channels, int kernel) : base(name)
    {
        if (kernel < 1) throw new ArgumentOutOfRangeException(nameof(kernel), $"kernel must be at least 1, got {kernel}");
        Channels = channels;
        Kernel = kernel;
        // Start near identity (the newest tap dominates) so an untrained model sees its projections almost unchanged.
        var init = randn(channels, 1, kernel) * (0.1 / Math.Sqrt(kernel));
        init[.., .., kernel - 1] += 1.0;
        weight = new Parameter(init);
        RegisterComponents();
    }

    /// <summary>x: [B, T, C]; cache: [B, C, K−1] (the previous inputs) or null for a sequence start (zeros).</summary>
    public (Tensor Output, Tensor Cache) Forward(Tensor x, Tensor? cache)
    {
        Tensor channelsFirst = x.transpose(1, 2);
        cache ??= zeros(x.shape[0], Channels, Kernel - 1, dtype: x.dtype, device: x.device);
        Tensor input = cat(new[] { cache, channelsFirst }, 2);
        Tensor output = nn.functional.conv1d(input, weight, groups: Channels).transpose(1, 2);
        Tensor newCache = input.narrow(2, input.shape[2] - (Kernel - 1), Kernel - 1).clone();
        return (output, newCache);
    }
}
