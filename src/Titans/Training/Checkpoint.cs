using System.Text.Json;
using TorchSharp;
using Titans.Checkpoints;
using Titans.Models;
using Titans.Text;
using static TorchSharp.torch;

namespace Titans.Training;

/// <summary>
/// A training checkpoint is one safetensors file, so it is replaced atomically as a whole (temporary file, then
/// rename): a crash mid-save leaves the previous checkpoint intact. It holds
/// <list type="bullet">
/// <item>the model weights under their module names (<c>embedding.weight</c>, <c>block0.attention.wq.weight</c>, …),
/// which PyTorch reads by name with <c>safetensors.torch.load_file</c>;</item>
/// <item>AdamW's moments as <c>optimizer.{name}.exp_avg</c>, <c>optimizer.{name}.exp_avg_sq</c> and the step count as
/// the 0-d int64 <c>optimizer.{name}.step</c>;</item>
/// <item>metadata: the format, the model and training configurations (JSON), the tokenizer and the step count.</item>
/// </list>
/// The data order needs no saved generator: batches are a function of (seed, step). docs/checkpoints.md has the layout.
/// </summary>
public static class Checkpoint
{
    public const string Format = CheckpointFormats.LanguageModel;
    /// <summary>A weights-only export (<see cref="Export"/>): no optimizer state; loads for evaluation and generation, not resume.</summary>
    public const string WeightsFormat = CheckpointFormats.Weights;
    /// <summary>The files of an export folder.</summary>
    public const string WeightsFile = "model.safetensors", ConfigFile = "config.json";
    const string OptimizerPrefix = "optimizer.";
    /// <summary>A SentencePiece model file, as a uint8 tensor, so the checkpoint carries its tokenizer.</summary>
    const string TokenizerModel = "tokenizer.model";

    /// <param name="extra">More metadata to keep (a task run's task and haystack); it cannot replace the keys above.</param>
    /// <remarks>Nothing that varies between identical runs (wall time) goes in, so identical runs save identical bytes.</remarks>
    public static void Save(string path, Trainer trainer, ITokenizer tokenizer, IReadOnlyDictionary<string, string>? extra = null)
    {
        using var scope = NewDisposeScope();
        var tensors = new List<KeyValuePair<string, Tensor>>();
        foreach (var (name, p) in trainer.Model.named_parameters()) tensors.Add(new(name, p));
        var states = OptimizerStates(trainer);
        for (int i = 0; i < trainer.Parameters.Count; i++)
        {
            string name = trainer.Parameters[i].Name;
            tensors.Add(new($"{OptimizerPrefix}{name}.exp_avg", states[i].exp_avg));
            tensors.Add(new($"{OptimizerPrefix}{name}.exp_avg_sq", states[i].exp_avg_sq));
            tensors.Add(new($"{OptimizerPrefix}{name}.step", tensor(states[i].step)));
        }
        if (tokenizer.ModelFile is byte[] file) tensors.Add(new(TokenizerModel, tensor(file)));
        var metadata = new Dictionary<string, string>
        {
            ["format"] = Format,
            ["model_config"] = trainer.Model.Config.ToJson(),
            ["training_config"] = trainer.Config.ToJson(),
            ["tokenizer"] = tokenizer.Name,
            ["step"] = trainer.Step.ToString(),
        };
        foreach (var (key, value) in extra ?? new Dictionary<string, string>())
            if (!metadata.TryAdd(key, value)) throw new ArgumentException($"The checkpoint metadata key '{key}' is reserved.");
        SafeTensors.Save(path, tensors, metadata);
    }

    /// <summary>What a checkpoint says about itself, without building anything.</summary>
    /// <param name="ElapsedMilliseconds">Training time up to the checkpoint, as checkpoints before this build recorded it (0 in newer ones;
    /// the CLI keeps it beside the checkpoint).</param>
    /// <param name="Metadata">All of the file's metadata, including what <see cref="Save"/> was given as extra.</param>
    public sealed record Header(TitansConfig Model, TrainingConfig Training, ITokenizer Tokenizer, int Step, long ElapsedMilliseconds,
        IReadOnlyDictionary<string, string> Metadata)
    {
        /// <summary>The metadata <see cref="Save"/> was given as extra (a run's corpus, a task run's task), to save again on resume.</summary>
        public IReadOnlyDictionary<string, string> Extra => Metadata.Where(m => !OwnKeys.Contains(m.Key)).ToDictionary();
    }

    static readonly string[] OwnKeys = ["format", "model_config", "training_config", "tokenizer", "step", "elapsed_ms"];

    public static Header ReadHeader(string path, SafeTensorsContent content)
    {
        string Get(string key) => content.Metadata.TryGetValue(key, out var value) ? value
            : throw new InvalidDataException($"'{path}' is not a Titans checkpoint: its metadata has no '{key}'.");
        string format = Get("format");
        if (format != Format && format != WeightsFormat)
            throw new InvalidDataException($"'{path}' is {CheckpointFormats.Describe(format)}; this command needs a language model checkpoint ({Format} or {WeightsFormat}).");
        TitansConfig model;
        TrainingConfig training;
        try
        {
            model = TitansConfig.FromJson(Get("model_config"));
            training = TrainingConfig.FromJson(Get("training_config"));
        }
        catch (ArgumentException e) { throw new InvalidDataException($"'{path}': {e.Message}", e); }
        byte[]? tokenizerFile = null;
        if (content.Tensors.TryGetValue(TokenizerModel, out var file))
        {
            if (file.dtype != ScalarType.Byte || file.dim() != 1) throw new InvalidDataException($"'{path}': {TokenizerModel} must be a 1-d uint8 tensor.");
            tokenizerFile = file.bytes.ToArray();
        }
        var tokenizer = Tokenizers.FromCheckpoint(path, Get("tokenizer"), tokenizerFile);
        if (!int.TryParse(Get("step"), out int step) || step < 0) throw new InvalidDataException($"'{path}': step '{Get("step")}' is not a step count.");
        long.TryParse(content.Metadata.GetValueOrDefault("elapsed_ms"), out long elapsed);
        return new Header(model, training, tokenizer, step, elapsed, content.Metadata);
    }

    /// <summary>The model of a checkpoint, for evaluation and generation, on <paramref name="device"/> (default: the CPU).</summary>
    public static (TitansLanguageModel Model, Header Header) LoadModel(string path, Device? device = null)
    {
        using var content = SafeTensors.Load(path);
        return LoadModel(path, content, device);
    }

    static (TitansLanguageModel Model, Header Header) LoadModel(string path, SafeTensorsContent content, Device? device = null)
    {
        var header = ReadHeader(path, content);
        RequireWeightsFor(path, content, header.Model);
        var model = new TitansLanguageModel("model", header.Model);
        try
        {
            if (device is not null) model.to(device);
            CopyWeights(path, content, model);
        }
        catch { model.Dispose(); throw; }
        model.eval();
        return (model, header);
    }

    /// <summary>
    /// A trainer exactly as it was when <paramref name="path"/> was saved; <paramref name="data"/> must give the same
    /// corpus (it gets the header, whose tokenizer and split to use, so the file is read once).
    /// <paramref name="steps"/> replaces the total step count (to train on past the planned end).
    /// </summary>
    /// <param name="environment">The replicas and core sharing the trainer runs with (<see cref="TrainingEnvironment"/>).</param>
    public static (Trainer Trainer, Header Header) Resume(string path, Func<Header, IBatchSource> data, int? steps = null, Device? device = null,
        TrainingEnvironment? environment = null)
    {
        using var content = SafeTensors.Load(path);
        var header = ReadHeader(path, content);
        if (content.Metadata["format"] == WeightsFormat)
            throw new InvalidDataException($"'{path}' holds weights only (an export, without the optimizer's state), so training cannot resume from it; " +
                                           "resume from the run's checkpoint.safetensors.");
        var config = steps is int s ? header.Training with { Steps = s } : header.Training;
        RequireWeightsFor(path, content, header.Model);
        var model = new TitansLanguageModel("model", header.Model);
        if (device is not null) model.to(device);   // before the optimizer takes the parameters
        var trainer = new Trainer(model, config, data(header), environment);
        try
        {
            CopyWeights(path, content, model);
            var states = OptimizerStates(trainer);
            using var noGrad = no_grad();
            for (int i = 0; i < trainer.Parameters.Count; i++)
            {
                string name = trainer.Parameters[i].Name;
                CopyInto(path, content, $"{OptimizerPrefix}{name}.exp_avg", states[i].exp_avg);
                CopyInto(path, content, $"{OptimizerPrefix}{name}.exp_avg_sq", states[i].exp_avg_sq);
                var step = Required(path, content, $"{OptimizerPrefix}{name}.step");
                if (step.dtype != ScalarType.Int64 || step.dim() != 0)
                    throw new InvalidDataException($"'{path}': {OptimizerPrefix}{name}.step must be a 0-d int64 tensor.");
                states[i].step = step.item<long>();
            }
            // Every step updates the parameters that have a gradient, so the optimizer has counted the header's steps
            // (a parameter that never had one counts fewer): a header that says otherwise would resume mid-schedule.
            long counted = states.Count == 0 ? header.Step : states.Max(s => s.step);
            if (counted != header.Step)
                throw new InvalidDataException($"'{path}' says it was saved at step {header.Step}, but its optimizer state has counted {counted} steps; " +
                                               "the file is inconsistent (edited?) and cannot resume.");
            trainer.Step = header.Step;
        }
        catch { trainer.Dispose(); model.Dispose(); throw; }
        return (trainer, header);
    }

    /// <summary>
    /// Writes the weights of a checkpoint to share, without the optimizer's state: <c>model.safetensors</c> (the
    /// parameters under their module names, the tokenizer's model file when it has one, and the configurations and
    /// tokenizer name as metadata) and <c>config.json</c> (the model configuration), in <paramref name="directory"/>.
    /// Every weight is checked finite first. Returns the number of weights and their bytes.
    /// </summary>
    public static (int Tensors, long Bytes) Export(string checkpoint, string directory)
    {
        using var content = SafeTensors.Load(checkpoint);   // checks the data's checksum
        var (model, header) = LoadModel(checkpoint, content);   // checks names, shapes and finiteness
        using (model)
        {
            var weights = model.named_parameters().Select(p => new KeyValuePair<string, Tensor>(p.name, p.parameter)).ToList();
            if (content.Tensors.TryGetValue(TokenizerModel, out var file)) weights.Add(new(TokenizerModel, file));
            Directory.CreateDirectory(directory);
            SafeTensors.Save(Path.Combine(directory, WeightsFile), weights, new Dictionary<string, string>
            {
                ["format"] = WeightsFormat, ["model_config"] = header.Model.ToJson(), ["training_config"] = header.Training.ToJson(),
                ["tokenizer"] = header.Tokenizer.Name, ["step"] = header.Step.ToString(),
            });
            Runtime.AtomicFile.WriteAllText(Path.Combine(directory, ConfigFile), header.Model.ToJson());
            return (weights.Count, weights.Sum(w => w.Value.numel() * w.Value.element_size()));
        }
    }

    /// <summary>
    /// The file holds as many weights as the configuration it records describes, checked before the model is built, so a
    /// configuration that does not match the weights (one of 90,000 layers) is refused without allocating it.
    /// </summary>
    static void RequireWeightsFor(string path, SafeTensorsContent content, TitansConfig model)
    {
        long weights = content.Tensors.Where(t => !IsNotWeight(t.Key)).Sum(t => t.Value.numel());
        if (model.ParameterCount != weights)
            throw new InvalidDataException($"'{path}': its model configuration describes {model.ParameterCount:N0} parameters, but it holds {weights:N0} " +
                                           "weights; the configuration does not belong to these weights.");
    }

    /// <summary>The tensors of a checkpoint that are not the model's weights: the optimizer's state and the tokenizer's model file.</summary>
    static bool IsNotWeight(string name) => name.StartsWith(OptimizerPrefix) || name == TokenizerModel;

    /// <summary>A model's weights, every one finite: the trainer never saves a non-finite step, so a NaN means a damaged file.</summary>
    static void CopyWeights(string path, SafeTensorsContent content, TitansLanguageModel model) =>
        CopyWeights(path, content, model, IsNotWeight, requireFinite: true);

    /// <summary>
    /// Copies every parameter of <paramref name="model"/> from the file by name, checking dtype and shape; a tensor in
    /// the file that is neither a parameter nor <paramref name="notWeights"/> is an error, and so, with
    /// <paramref name="requireFinite"/>, is a NaN or infinite value (named).
    /// </summary>
    internal static void CopyWeights(string path, SafeTensorsContent content, nn.Module model, Func<string, bool> notWeights, bool requireFinite = false)
    {
        var names = model.named_parameters().Select(p => p.name).ToHashSet();
        var extra = content.Tensors.Keys.Where(k => !notWeights(k) && !names.Contains(k)).ToList();
        if (extra.Count > 0)
            throw new InvalidDataException($"'{path}' holds weights the model does not have: {string.Join(", ", extra.Take(5))}" +
                                           (extra.Count > 5 ? $" and {extra.Count - 5} more" : "") + ".");
        using var noGrad = no_grad();
        foreach (var (name, p) in model.named_parameters())
        {
            CopyInto(path, content, name, p);
            if (requireFinite && !p.isfinite().all().item<bool>())
                throw new InvalidDataException($"'{path}': '{name}' holds NaN or infinite values.");
        }
    }

    static Tensor Required(string path, SafeTensorsContent content, string name) =>
        content.Tensors.TryGetValue(name, out var t) ? t : throw new InvalidDataException($"'{path}' lacks the tensor '{name}'.");

    static void CopyInto(string path, SafeTensorsContent content, string name, Tensor destination)
    {
        var source = Required(path, content, name);
        if (source.dtype != destination.dtype || !source.shape.SequenceEqual(destination.shape))
            throw new InvalidDataException($"'{path}': '{name}' is {source.dtype} [{string.Join(", ", source.shape)}], " +
                                           $"the model needs {destination.dtype} [{string.Join(", ", destination.shape)}].");
        destination.copy_(source);
    }

    /// <summary>AdamW's per-parameter state, in <see cref="Trainer.Parameters"/> order (TorchSharp lists it by group, then parameter).</summary>
    static IReadOnlyList<TorchSharp.Modules.AdamW.State> OptimizerStates(Trainer trainer)
    {
        var states = trainer.Optimizer.state_dict().State.Cast<TorchSharp.Modules.AdamW.State>().ToList();
        if (states.Count != trainer.Parameters.Count)
            throw new InvalidOperationException($"The optimizer holds {states.Count} states for {trainer.Parameters.Count} parameters.");
        return states;
    }
}
