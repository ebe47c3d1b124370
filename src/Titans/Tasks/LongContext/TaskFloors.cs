namespace Titans.Tasks.LongContext;

/// <summary>
/// What a model scores on a task without reading far back, printed beside every task score so a result is read against
/// it. <see cref="InReach"/>: the examples whose needle (every inserted fact) lies within the last L tokens before the
/// answer; a model that reads only as far back as it trained (a window, or attention that fails past L) can answer
/// those, so a memory model shows memory only above this floor. <see cref="Guessed"/>: the answers a model gets right by
/// always writing the most frequent answer of the training examples (chance, in effect).
/// </summary>
public static class TaskFloors
{
    /// <summary>Whether the whole evidence lies within the last <paramref name="reach"/> tokens that predict the first answer token.</summary>
    public static bool InReach(TaskExample example, int reach) => example.Answers[0].Start - example.EvidenceStart <= reach;

    /// <summary>The fraction of the example's answers that are <paramref name="answer"/>.</summary>
    public static double Guessed(TaskExample example, string answer) =>
        (double)example.Answers.Count(a => a.Text == answer) / example.Answers.Count;

    /// <summary>
    /// The most frequent answer over <paramref name="samples"/> training examples of <paramref name="length"/> tokens at
    /// random depths: the answer a model that ignores its input would learn to write (ties go to the first seen).
    /// </summary>
    public static string MostFrequentAnswer(ILongContextTask task, int length, int samples = 1000, int seed = 0)
    {
        var random = new Random(seed);
        var counts = new Dictionary<string, int>();
        var order = new List<string>();
        for (int i = 0; i < samples; i++)
            foreach (var answer in task.Generate(length, random.NextDouble(), random, evaluation: false).Answers)
            {
                if (!counts.TryAdd(answer.Text, 1)) counts[answer.Text]++;
                else order.Add(answer.Text);
            }
        return order.MaxBy(a => counts[a])!;
    }
}
