using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Titans.Models;

/// <summary>
/// A sequence classifier: token embedding, the <see cref="SequenceBackbone"/>, the maximum of each channel of its
/// outputs over the non-padding positions (max-pooling keeps a signal at one position, a motif, undiluted; docs/dna.md
/// measured it against the mean), and a linear head to the classes. Its weights are named as a language model's
/// (<c>embedding.weight</c>, <c>blocks.{i}.…</c>, <c>norm.weight</c>) plus <c>class_head.*</c>, so
/// <see cref="InitializeFrom"/> fine-tunes from a pretrained language model of the same configuration.
/// </summary>
public sealed class SequenceClassifier : nn.Module<Tensor, Tensor>
{
    public TitansConfig Config { get; }
    public int Classes { get; }
    readonly Embedding embedding;
    readonly Linear class_head;
    public SequenceBackbone Backbone { get; }

    public SequenceClassifier(string name, TitansConfig config, int classes) : base(name)
    {
        if (classes < 2) throw new ArgumentException($"A classifier needs at least 2 classes, got {classes}.", nameof(classes));
        Config = config.Validate();
        Classes = classes;
        embedding = nn.Embedding(config.VocabSize, config.ModelDim);
        Backbone = new SequenceBackbone("backbone", config);
        class_head = nn.Linear(config.ModelDim, classes);
        register_module("embedding", embedding);
        Backbone.RegisterInto(this);
        register_module("class_head", class_head);
    }

    /// <summary>The parameters counted without the head: equal to a language model's of this configuration less its output head.</summary>
    public static long ParameterCount(TitansConfig config, int classes) => config.ParameterCount - (long)config.VocabSize * config.ModelDim + (config.ModelDim + 1L) * classes;

    /// <summary>tokens [B, T] (padding id 0 is left out of the pooling) → class logits [B, classes].</summary>
    public override Tensor forward(Tensor tokens)
    {
        if (tokens.dim() != 2 || tokens.dtype != ScalarType.Int64 || tokens.numel() == 0)
            throw new ArgumentException($"Tokens must be a non-empty int64 tensor [batch, time], got {tokens.dtype} [{string.Join(", ", tokens.shape)}].", nameof(tokens));
        using var scope = NewDisposeScope();
        var (hidden, state) = Backbone.Forward(embedding.forward(tokens), null);
        state.Dispose();
        Tensor keep = tokens.ne(0).unsqueeze(-1);
        Tensor pooled = hidden.masked_fill(keep.logical_not(), float.NegativeInfinity).amax(new long[] { 1 });
        return class_head.forward(pooled).MoveToOuterDisposeScope();
    }

    /// <summary>Copies the embedding, blocks and final norm of <paramref name="model"/> (same configuration); the class head stays as initialized.</summary>
    public void InitializeFrom(TitansLanguageModel model)
    {
        if (model.Config != Config)
            throw new ArgumentException("The pretrained language model's configuration differs from the classifier's; build the classifier from the checkpoint's configuration.");
        var source = model.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        using var noGrad = no_grad();
        foreach (var (name, p) in named_parameters())
            if (!name.StartsWith("class_head.")) p.copy_(source[name]);
    }
}
