using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Titans.Layers;

/// <summary>SwiGLU feed-forward (Llama): down(SiLU(gate(x)) ⊙ up(x)).</summary>
public sealed class SwiGlu : nn.Module<Tensor, Tensor>
{
    readonly Linear gate_proj, up_proj, down_proj;

    public SwiGlu(string name, int dim, int hidden) : base(name)
    {
        if (dim < 1 || hidden < 1) throw new ArgumentOutOfRangeException(nameof(hidden), $"SwiGlu needs positive widths, got {dim} and {hidden}.");
        gate_proj = nn.Linear(dim, hidden, hasBias: false);
        up_proj = nn.Linear(dim, hidden, hasBias: false);
        down_proj = nn.Linear(hidden, dim, hasBias: false);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x) => down_proj.forward(nn.functional.silu(gate_proj.forward(x)) * up_proj.forward(x));
}
