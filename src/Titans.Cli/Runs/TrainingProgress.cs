using Spectre.Console;

namespace Titans.Cli.Runs;

/// <summary>One logged training step, as the progress display shows it.</summary>
public sealed record StepReport(int Step, int Steps, double Loss, double LearningRate, double GradientNorm, double TokensPerSecond,
    double ElapsedSeconds, double EtaSeconds)
{
    public string Line => $"step {Step,6}/{Steps}  loss {Loss:F4}  lr {LearningRate:E2}  |g| {GradientNorm:F2}  " +
                          $"{TokensPerSecond:N0} tok/s  elapsed {Clock(ElapsedSeconds)}  eta {Clock(EtaSeconds)}";

    public static string Clock(double seconds) =>
        double.IsFinite(seconds) ? TimeSpan.FromSeconds(Math.Round(seconds)).ToString(@"h\:mm\:ss") : "?";
}

/// <summary>
/// How a run shows its progress: a live bar (step, loss, tokens/s, ETA) in an interactive terminal, plain lines when
/// the output is redirected to a file or a pipe, so logs stay readable.
/// </summary>
public abstract class TrainingProgress
{
    /// <summary>Every step: the bar moves; plain output ignores it.</summary>
    public abstract void Tick(int step);
    /// <summary>A logged step: a line in plain output, the bar's caption in a terminal.</summary>
    public abstract void Log(StepReport report);
    /// <summary>A line that stays (validation results, messages), above the bar.</summary>
    public abstract void Message(string line);

    /// <summary>Runs <paramref name="body"/> with the display that suits the console.</summary>
    public static T Show<T>(int firstStep, int steps, Func<TrainingProgress, T> body)
    {
        if (Console.IsOutputRedirected || !AnsiConsole.Profile.Capabilities.Interactive)
            return body(new Plain());
        T result = default!;
        var display = AnsiConsole.Progress();
        display.RefreshRate = TimeSpan.FromSeconds(1);   // each redraw takes a core from libtorch's threads
        display
            .AutoClear(false)
            .Columns(new TaskDescriptionColumn { Alignment = Justify.Left }, new ProgressBarColumn(), new PercentageColumn(),
                     new ElapsedTimeColumn(), new RemainingTimeColumn(), new SpinnerColumn())
            .Start(context =>
            {
                var task = context.AddTask(Caption(firstStep, steps, null), maxValue: steps);
                task.Value = firstStep;
                result = body(new Bar(task, steps));
            });
        return result;
    }

    static string Caption(int step, int steps, StepReport? report) => report is null
        ? Markup.Escape($"step {step}/{steps}")
        : Markup.Escape($"step {report.Step}/{steps}  loss {report.Loss:F4}  {report.TokensPerSecond:N0} tok/s  eta {StepReport.Clock(report.EtaSeconds)}");

    sealed class Plain : TrainingProgress
    {
        public override void Tick(int step) { }
        public override void Log(StepReport report) => Console.WriteLine(report.Line);
        public override void Message(string line) => Console.WriteLine(line);
    }

    sealed class Bar(ProgressTask task, int steps) : TrainingProgress
    {
        public override void Tick(int step) => task.Value = step;
        public override void Log(StepReport report) => task.Description = Caption(report.Step, steps, report);
        public override void Message(string line) => AnsiConsole.MarkupLine(Markup.Escape(line));
    }
}
