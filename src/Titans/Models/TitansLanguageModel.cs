using TorchSharp;
using TorchSharp.Modules;
using Titans.Layers;
using Titans.Memory;
using static TorchSharp.torch;

namespace Titans.Models;

/// <summary>
/// A language model: token embedding, the <see cref="SequenceBackbone"/> (blocks and final RMSNorm) and a linear head.
/// <see cref="Forward"/> takes and returns a <see cref="ModelState"/>, so a document can be scored or generated in
/// pieces of any size with the same logits as in one pass. Weights: <c>embedding.weight</c>, <c>blocks.{i}.…</c>,
/// <c>norm.weight</c>, <c>head.weight</c>.
/// </summary>
public sealed class TitansLanguageModel : StreamingModule<ModelState>
{
    public TitansConfig Config { get; }
    readonly Embedding embedding;
    readonly Linear head;

    /// <summary>The blocks and final norm, [B, T, d] → [B, T, d].</summary>
    public SequenceBackbone Backbone { get; }
    internal IList<Block> Blocks => Backbone.Blocks;
    /// <summary>The token embedding (shared by name with the classifier, which fine-tunes from a language model).</summary>
    internal Embedding Embedding => embedding;

    /// <summary>Where the model's parameters live; inputs are moved there (the CLI's --device).</summary>
    public Device Device => embedding.weight!.device;

    public TitansLanguageModel(string name, TitansConfig config) : base(name)
    {
        Config = config.Validate();
        Runtime.MemoryBudget.Require(config.ParameterCount * sizeof(float), $"A model of {config.ParameterCount:N0} parameters (its float32 weights)");
        embedding = nn.Embedding(config.VocabSize, config.ModelDim);
        Backbone = new SequenceBackbone("backbone", config);
        head = nn.Linear(config.ModelDim, config.VocabSize, hasBias: false);
        // Registered by hand, in this order, so the names (and the optimizer's order) are those of every earlier checkpoint.
        register_module("embedding", embedding);
        Backbone.RegisterInto(this);
        register_module("head", head);
    }

    /// <summary>tokens: [B, T] int64 ids → logits [B, T, vocab], and the state to continue from.</summary>
    public override (Tensor Output, ModelState State) Forward(Tensor tokens, ModelState? state)
    {
        CheckTokens(tokens);
        using var scope = NewDisposeScope();
        var (hidden, next) = Backbone.Forward(embedding.forward(tokens), state);
        Tensor logits = head.forward(hidden);
        scope.MoveToOuter(next.Tensors.Append(logits));
        return (logits, next);
    }

    /// <summary>
    /// The state after <paramref name="tokens"/>, without the logits (the final norm and head are skipped): for text that
    /// is only read, such as a training stream's prefix or the chunks of an example before its answer.
    /// </summary>
    public ModelState Advance(Tensor tokens, ModelState? state)
    {
        CheckTokens(tokens);
        using var scope = NewDisposeScope();
        var next = Backbone.Advance(embedding.forward(tokens), state);
        scope.MoveToOuter(next.Tensors);
        return next;
    }

    /// <summary>
    /// A state reached without gradient (a training stream's prefix) with every memory tied back to the gradient path of
    /// its starting state, so the memories' W₀ (and MAG's and MAL's persistent write) learn from a sequence that starts
    /// late in a stream (<see cref="NeuralMemory.WithGradientToStart"/>). Values are unchanged; the given state is left
    /// as it is.
    /// </summary>
    public ModelState WithGradientToStart(ModelState state) => Backbone.WithGradientToStart(state);

    void CheckTokens(Tensor tokens)
    {
        if (tokens.dim() != 2 || tokens.dtype != ScalarType.Int64)
            throw new ArgumentException($"Tokens must be an int64 tensor [batch, time], got {tokens.dtype} [{string.Join(", ", tokens.shape)}].", nameof(tokens));
        if (tokens.numel() == 0)
            throw new ArgumentException($"Tokens must hold at least one token, got [{string.Join(", ", tokens.shape)}].", nameof(tokens));
        long min = tokens.min().item<long>(), max = tokens.max().item<long>();
        if (min < 0 || max >= Config.VocabSize)
            throw new ArgumentException($"Token ids must lie in [0, {Config.VocabSize}), got {min}..{max}.", nameof(tokens));
    }
}
