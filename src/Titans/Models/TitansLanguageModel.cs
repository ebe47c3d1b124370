using TorchSharp;
using TorchSharp.Modules;
using Titans.Layers;
using static TorchSharp.torch;

namespace Titans.Models;

/// <summary>
/// A language model: token embedding, <see cref="TitansConfig.Layers"/> blocks, a final RMSNorm and a linear head.
/// <see cref="Forward"/> takes and returns a <see cref="ModelState"/>, so a document can be scored or generated in
/// pieces of any size with the same logits as in one pass.
/// </summary>
public sealed class TitansLanguageModel : StreamingModule<ModelState>
{
    public TitansConfig Config { get; }
    readonly Embedding embedding;
    readonly ModuleList<Block> blocks;
    readonly RmsNorm norm;
    readonly Linear head;

    internal IList<Block> Blocks => blocks;

    /// <summary>Where the model's parameters live; inputs are moved there (the CLI's --device).</summary>
    public Device Device => embedding.weight!.device;

    public TitansLanguageModel(string name, TitansConfig config) : base(name)
    {
        Config = config.Validate();
        embedding = nn.Embedding(config.VocabSize, config.ModelDim);
        blocks = new ModuleList<Block>(Enumerable.Range(0, config.Layers).Select(i => new Block($"block{i}", config)).ToArray());
        norm = new RmsNorm("norm", config.ModelDim);
        head = nn.Linear(config.ModelDim, config.VocabSize, hasBias: false);
        RegisterComponents();
    }

    /// <summary>tokens: [B, T] int64 ids → logits [B, T, vocab], and the state to continue from.</summary>
    public override (Tensor Output, ModelState State) Forward(Tensor tokens, ModelState? state)
    {
        var (logits, next) = Run(tokens, state, withLogits: true);
        return (logits!, next);
    }

    /// <summary>
    /// The state after <paramref name="tokens"/>, without the logits (the final norm and head are skipped): for text that
    /// is only read, such as a training stream's prefix or the chunks of an example before its answer.
    /// </summary>
    public ModelState Advance(Tensor tokens, ModelState? state) => Run(tokens, state, withLogits: false).State;

    /// <summary>
    /// A state reached without gradient (a training stream's prefix) with every memory tied back to the gradient path of
    /// its starting state, so the memories' W₀ (and MAG's and MAL's persistent write) learn from a sequence that starts
    /// late in a stream (<see cref="NeuralMemory.WithGradientToStart"/>). Values are unchanged; the given state is left
    /// as it is.
    /// </summary>
    public ModelState WithGradientToStart(ModelState state)
    {
        if (state.Blocks.Count != blocks.Count)
            throw new ArgumentException($"The state has {state.Blocks.Count} blocks, the model {blocks.Count}.", nameof(state));
        return new ModelState(blocks.Select((b, i) => b.WithGradientToStart(state.Blocks[i])).ToArray(), state.Position);
    }

    (Tensor? Logits, ModelState State) Run(Tensor tokens, ModelState? state, bool withLogits)
    {
        CheckTokens(tokens);
        if (state is not null && state.Blocks.Count != blocks.Count)
            throw new ArgumentException($"The state has {state.Blocks.Count} blocks, the model {blocks.Count}.", nameof(state));
        using var scope = NewDisposeScope();
        Tensor x = embedding.forward(tokens);
        var states = new BlockState[blocks.Count];
        for (int i = 0; i < blocks.Count; i++)
            (x, states[i]) = blocks[i].Forward(x, state?.Blocks[i]);
        Tensor? logits = withLogits ? head.forward(norm.forward(x)) : null;
        var next = new ModelState(states, (state?.Position ?? 0) + tokens.shape[1]);
        scope.MoveToOuter(logits is null ? next.Tensors : next.Tensors.Append(logits));
        return (logits, next);
    }

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
