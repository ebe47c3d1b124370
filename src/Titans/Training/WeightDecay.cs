namespace Titans.Training;

/// <summary>
/// Which parameters AdamW decays, by name (as <c>named_parameters</c> gives them). Decayed: the matrices of the
/// projections and feed-forwards, the embedding and head, attention's persistent memory tokens, and the memories' W₀
/// (those optionally at a rate of their own). Not decayed, named here: the gain of every normalization (RMSNorm
/// <c>*norm.weight</c>), the memory's LayerNorm gain and bias (<c>ln_weight</c>, <c>ln_bias</c>), its gate biases
/// (<c>gate_bias</c>), every linear map's bias and the forecasters' instance normalization (<c>instance_norm_*</c>) and its causal convolution's taps (<c>qkv_conv.weight</c>, which start near the identity, not 0).
/// Decay would pull each of those toward 0, which is not their neutral value.
/// </summary>
public static class WeightDecay
{
    static readonly string[] ExemptParameters = { "ln_weight", "ln_bias", "gate_bias", "bias", "instance_norm_weight", "instance_norm_bias" };
    static readonly string[] ExemptModules = { "qkv_conv" };

    public static bool IsExempt(string parameterName)
    {
        string[] parts = parameterName.Split('.');
        string leaf = parts[^1];
        string module = parts.Length >= 2 ? parts[^2] : "";
        return ExemptParameters.Contains(leaf) || ExemptModules.Contains(module) || (module.EndsWith("norm") && leaf == "weight");
    }
}
