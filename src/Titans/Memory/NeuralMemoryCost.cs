namespace Titans.Memory;

/// <summary>
/// Floating-point operations of one forward pass of <see cref="NeuralMemory"/> on the chunked path, counting matmuls
/// (2·m·n·k) as the algorithm performs them (docs/method.md §3); elementwise work is not counted. Used to report achieved
/// GFLOP/s. Forward+backward is conventionally counted as 3× the forward.
/// </summary>
public static class NeuralMemoryCost
{
    public static double ForwardFlops(NeuralMemoryConfig c, long length, long batch = 1)
    {
        double d = c.ModelDim, inner = c.Heads * c.HeadDim, t = length;
        double projections = 2 * t * d * inner * (c.OutputGate == OutputGate.None ? 3 : 4)  // q, k, v (, gate)
                             + 2 * t * inner * d                                               // output projection
                             + (c.DataDependentGates ? 2 * t * d * (2 + c.ForgettingChannels) * c.Heads : 0)
                             + 2 * t * 3 * inner * c.ConvKernel;

        double b = c.ChunkSize, chunks = Math.Ceiling(t / b);
        double perChunk = 2 * b * b * b * (c.ChannelwiseForgetting ? c.ForgettingChannels : 1); // C = (DA∘L)(DE∘L) per channel
        var shapes = c.LayerShapes;
        for (int l = 0; l < shapes.Count; l++)
        {
            double o = shapes[l].Out, i = shapes[l].In;
            double keyForward = 2 * b * i * o, keyBackward = l > 0 ? 2 * b * o * i : 0;
            double retrieval = (c.RetainTowardInitial ? 3 : 2) * (2 * b * i * o) + 2 * b * b * i + 2 * b * b * o; // Z Wᵀ, Z Sᵀ (, Z W₀ᵀ), Z Aᵀ, (C∘P) Δ
            double endState = 2 * (2 * o * b * i);                                     // new W and S
            perChunk += keyForward + keyBackward + retrieval + endState;
        }
        return batch * (projections + chunks * c.Heads * perChunk);
    }
}
