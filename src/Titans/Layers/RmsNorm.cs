using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Titans.Layers;

/// <summary>RMSNorm over the last dimension with a learned scale: x / sqrt(mean(x²) + ε) · w.</summary>
public sealed class RmsNorm : nn.Module<Tensor, Tensor>
{
    readonly Parameter weight;
    readonly double eps;

    public RmsNorm(string name, int dim, double eps = 1e-6) : base(name)
    {
        this.eps = eps;
        weight = new Parameter(ones(dim));
        RegisterComponents();
    }

    public override Tensor forward(Tensor x) => Normalize(x, eps) * weight;

    /// <summary>x / sqrt(mean(x²) + ε) over the last dimension, with no learned scale.</summary>
    public static Tensor Normalize(Tensor x, double eps = 1e-6) => x * (x.square().mean(new long[] { -1 }, keepdim: true) + eps).rsqrt();
}
