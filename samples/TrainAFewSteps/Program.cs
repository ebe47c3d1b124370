// Trains a tiny MAC for a few steps on a text, saves and reloads the checkpoint, and continues a prompt.
using Titans.Generation;
using Titans.Models;
using Titans.Runtime;
using Titans.Text;
using Titans.Training;
using static TorchSharp.torch;

// The package's build step keeps TorchSharp's own methods unoptimized, so what they hand to libtorch stays alive.
if (!TorchSharpJit.KeepsArgumentsAlive) throw new InvalidOperationException(TorchSharpJit.Warning);

string text = string.Concat(Enumerable.Range(0, 400).Select(i => $"Line {i}: the whale is {(i % 5 == 0 ? "white" : "grey")}.\n"));
var tokenizer = ByteTokenizer.Instance;
var training = new TrainingConfig { Steps = 5, BatchSize = 4, SequenceLength = 64, WarmupSteps = 2 }.Validate();
var data = new TokenData(tokenizer.Encode(text), training.ValidationFraction, training.SequenceLength);

manual_seed(1);
using var model = new TitansLanguageModel("model", Presets.Get("tiny", Architecture.Mac));
using (var trainer = new Trainer(model, training, data))
{
    while (trainer.Step < training.Steps)
    {
        var step = trainer.TrainStep();
        Console.WriteLine($"step {trainer.Step}: loss {step.Loss:F4}");
    }
    Checkpoint.Save("sample.safetensors", trainer, tokenizer);
}

var (loaded, header) = Checkpoint.LoadModel("sample.safetensors");
using (loaded)
{
    var prompt = tokenizer.Encode("Line 7: the");
    var tokens = TextGenerator.Generate(loaded, prompt, 30, new SamplingOptions(Temperature: 0)).ToArray();
    Console.WriteLine($"reloaded {ArchitectureNames.Display(header.Model)} at step {header.Step}: \"Line 7: the{tokenizer.Decode(tokens)}\"");
}
