using System.Text.RegularExpressions;
using Titans.Tasks.LongContext;
using Titans.Text;

namespace Titans.Tests.Tasks;

/// <summary>
/// The long-context generators: exact lengths, the needle once and where it was asked for, answers that are what the
/// facts say (re-derived here by a separate solver), training and evaluation filler kept apart, and determinism by seed.
/// </summary>
public class LongContextTaskTests
{
    static readonly string MobyDick = File.ReadAllText(Path.Combine(AppContext.BaseDirectory, "data", "moby-dick.txt"));
    static readonly Lazy<Haystack> Book = new(() => Haystack.FromText("moby-dick", MobyDick, ByteTokenizer.Instance));

    static ILongContextTask Task(string name, ITokenizer? tokenizer = null) =>
        tokenizer is null ? LongContextTasks.Create(name, ByteTokenizer.Instance, () => Book.Value)
                          : LongContextTasks.Create(name, tokenizer, () => Haystack.FromText("moby-dick", MobyDick, tokenizer));

    static string Text(TaskExample e, ITokenizer? tokenizer = null) => (tokenizer ?? ByteTokenizer.Instance).Decode(e.Tokens);

    static int Occurrences(string text, string value) => Regex.Matches(text, Regex.Escape(value)).Count;

    public static IEnumerable<object[]> AllTasks => LongContextTasks.Names.Select(n => new object[] { n });

    [Theory]
    [MemberData(nameof(AllTasks))]
    public void ExamplesHaveTheRequestedLengthAndTheirAnswersAtTheEnd(string name)
    {
        var task = Task(name);
        var random = new Random(1);
        foreach (int length in new[] { task.MinimumLength, 300, 1000, 5000 })
            foreach (double depth in new[] { 0.0, 0.3, 1.0 })
            {
                var example = task.Generate(length, depth, random, evaluation: true);
                Assert.Equal(length, example.Length);
                Assert.NotEmpty(example.Answers);
                foreach (var answer in example.Answers)
                    Assert.Equal(answer.Text, ByteTokenizer.Instance.Decode(example.Tokens.AsSpan(answer.Start, answer.Length)));
                var last = example.Answers[^1];
                Assert.Equal(length, last.Start + last.Length);                        // the example ends with its last answer
                Assert.Contains(example.Question, Text(example));
            }
        var error = Assert.Throws<ArgumentException>(() => task.Generate(20, 0.5, random, evaluation: false));
        Assert.Contains("too short", error.Message);
        // One token below the minimum `task list` prints, every example is refused with that minimum, whatever its words.
        for (int i = 0; i < 20; i++)
        {
            error = Assert.Throws<ArgumentException>(() => task.Generate(task.MinimumLength - 1, 0.5, random, evaluation: i % 2 == 0));
            Assert.Contains($"at least {task.MinimumLength} tokens", error.Message);
        }
    }

    [Theory]
    [InlineData("passkey", 2)]
    [InlineData("number", 1)]
    [InlineData("uuid", 1)]
    public void TheNeedleOccursOnceAtItsDepth(string name, int inNeedle)
    {
        var task = Task(name);
        var random = new Random(2);
        foreach (double depth in new[] { 0.0, 0.25, 0.5, 0.75, 1.0 })
            for (int i = 0; i < 20; i++)
            {
                var example = task.Generate(2000, depth, random, evaluation: i % 2 == 0);
                string text = Text(example);
                string value = example.Answers.Single().Text;
                Assert.Equal(inNeedle + 1, Occurrences(text, value));                 // in the needle, and as the answer
                Assert.Equal(1, Occurrences(text, example.Facts.Single()));
                // The needle is within a few tokens of the requested depth of the filler.
                int needle = Bytes(text[..text.IndexOf(example.Facts.Single(), StringComparison.Ordinal)]);
                int question = Bytes(text[..text.LastIndexOf(example.Question, StringComparison.Ordinal)]);
                int filler = question - Bytes(example.Facts.Single() + " ");
                double at = needle / (double)filler;
                Assert.True(Math.Abs(needle - depth * filler) <= ExampleAssembler.MaxShift + 1, $"{name}: needle at {at:F3} of the filler, asked for {depth}");
            }
    }

    static int Bytes(string text) => System.Text.Encoding.UTF8.GetByteCount(text);

    [Theory]
    [MemberData(nameof(AllTasks))]
    public void TheEvidenceStartsWhereTheFirstNeedleOrFactDoes(string name)
    {
        var task = Task(name);
        var random = new Random(4);
        foreach (double depth in new[] { 0.0, 0.5, 1.0 })
        {
            var example = task.Generate(3000, depth, random, evaluation: true);
            int first = Bytes(Text(example)[..Text(example).IndexOf(example.Facts[0], StringComparison.Ordinal)]);
            Assert.InRange(first - example.EvidenceStart, 0, 1);                 // a needle's piece may open with its space
        }
    }

    [Fact]
    public void TheFloorsCountNeedlesWithinReachAndTheMostFrequentAnswer()
    {
        var passkey = Task("passkey");
        var random = new Random(5);
        for (int i = 0; i < 10; i++)
        {
            Assert.True(TaskFloors.InReach(passkey.Generate(129, random.NextDouble(), random, evaluation: true), 128));   // at L, always
            Assert.True(TaskFloors.InReach(passkey.Generate(16 * 128 + 1, 1.0, random, evaluation: true), 128));          // beside the question
            Assert.False(TaskFloors.InReach(passkey.Generate(16 * 128 + 1, 0.0, random, evaluation: true), 128));         // at the start of 16L
        }
        var qa1 = Task("qa1");
        string frequent = TaskFloors.MostFrequentAnswer(qa1, 257);
        Assert.Contains(frequent, new[] { "bathroom", "hallway", "kitchen", "garden", "office", "bedroom" });
        var examples = Enumerable.Range(0, 300).Select(_ => qa1.Generate(300, 0.5, random, evaluation: true)).ToList();
        double guessed = examples.Average(e => TaskFloors.Guessed(e, frequent));
        Assert.Equal(examples.Count(e => e.Answers[0].Text == frequent) / 300.0, guessed, 12);
        Assert.InRange(guessed, 0.10, 0.30);                                      // one place of six, about
        var mqar = Task("mqar").Generate(400, 0.5, random, evaluation: true);
        Assert.Equal(mqar.Answers.Count(a => a.Text == mqar.Answers[0].Text) / (double)mqar.Answers.Count, TaskFloors.Guessed(mqar, mqar.Answers[0].Text), 12);
    }

    [Theory]
    [InlineData("qa1")]
    [InlineData("qa2")]
    [InlineData("qa3")]
    [InlineData("qa4")]
    [InlineData("qa5")]
    public void BabiAnswersFollowFromTheFacts(string name)
    {
        var task = Task(name);
        var random = new Random(3);
        for (int i = 0; i < 300; i++)
        {
            var example = task.Generate(600, 0.5, random, evaluation: false);
            string text = Text(example);
            int at = 0;
            foreach (string fact in example.Facts)                                   // in order, each present
            {
                int found = text.IndexOf(fact, at, StringComparison.Ordinal);
                Assert.True(found >= 0, $"{name}: the fact '{fact}' is missing or out of order");
                at = found + fact.Length;
            }
            Assert.Equal(BabiSolver.Answer(example.Facts, example.Question), example.Answers.Single().Text);
        }
    }

    [Fact]
    public void MqarRecallsEveryPairWithDistinctKeysTheHaystackLacks()
    {
        var task = Task("mqar");
        var example = task.Generate(1500, 0.3, new Random(4), evaluation: true);
        string text = Text(example);
        var pairs = example.Facts.Select(f => f.Split('=')).ToDictionary(p => p[0], p => p[1]);
        Assert.Equal(8, pairs.Count);
        Assert.Equal(8, example.Answers.Count);
        string recall = text[text.LastIndexOf("Recall:", StringComparison.Ordinal)..];
        var queries = Regex.Matches(recall, @"([A-Z]{3})=(\d\d)").Select(m => (m.Groups[1].Value, m.Groups[2].Value)).ToList();
        Assert.Equal(pairs.Keys.Order(), queries.Select(q => q.Item1).Order());
        foreach (var (key, value) in queries)
        {
            Assert.Equal(pairs[key], value);
            Assert.Equal(2, Occurrences(text, key + "="));                         // once among the pairs, once queried
            Assert.False(Book.Value.Contains(key));
        }
    }

    [Fact]
    public void TrainingAndEvaluationExamplesDrawOnDifferentFiller()
    {
        string book = Regex.Replace(MobyDick, @"\s+", " ");
        var random = new Random(5);
        List<int> Positions(bool evaluation) => Enumerable.Range(0, 40).Select(_ =>
        {
            var (tokens, _, _) = Book.Value.Take(300, random, evaluation);
            string start = ByteTokenizer.Instance.Decode(tokens)[..60];
            return book.IndexOf(start, StringComparison.Ordinal);
        }).Where(p => p >= 0).ToList();
        var training = Positions(false);
        var evaluation = Positions(true);
        Assert.True(training.Count > 30 && evaluation.Count > 30, "the filler is text of the book");
        Assert.True(evaluation.Min() > training.Max(), $"evaluation filler from {evaluation.Min()}, training filler up to {training.Max()}");
        Assert.True(evaluation.Min() > book.Length * 0.8, "the evaluation part is the end of the book");
    }

    [Fact]
    public void APrefixIsTheStartOfALongerExampleAndHoldsNoAnswer()
    {
        var source = new TaskBatches(Task("passkey"));
        const int length = 128, prefix = 200;
        using var batch = source.Batch(seed: 4, step: 2, micro: 0, batchSize: 3, sequenceLength: length, prefixLength: prefix);
        using var plain = source.Batch(seed: 4, step: 2, micro: 0, batchSize: 3, sequenceLength: length);
        Assert.Null(plain.Prefix);
        Assert.Equal(new long[] { 3, prefix }, batch.Prefix!.shape);
        Assert.Equal(new long[] { 3, length }, batch.Tokens.shape);
        // The same draw as a plain batch of the whole length: prefix, inputs and the last target are one example.
        var random = new Random(Titans.Training.BatchSeed.Of(4, 2, 0));
        var task = Task("passkey");
        for (int b = 0; b < 3; b++)
        {
            var example = task.Generate(prefix + length + 1, random.NextDouble(), random, evaluation: false);
            long[] joined = batch.Prefix[b].data<long>().Concat(batch.Tokens[b].data<long>()).Append(batch.Targets[b, -1].item<long>()).ToArray();
            Assert.Equal(example.Tokens, joined);
            var scored = Enumerable.Range(0, length).Where(i => batch.Scored![b, i].item<bool>()).Select(i => i + prefix);
            Assert.Equal(example.AnswerInputs, scored);
        }
        // An example too short to keep its answer after the prefix is refused by name.
        var shortExample = task.Generate(length, 0.5, new Random(1), evaluation: false);
        var error = Assert.Throws<ArgumentException>(() => TaskBatches.Tensors(new[] { shortExample }, prefixLength: shortExample.AnswerInputs.Min() + 1));
        Assert.Contains("prefix", error.Message);
    }

    [Theory]
    [MemberData(nameof(AllTasks))]
    public void TheSameSeedGivesTheSameExamples(string name)
    {
        var task = Task(name);
        var a = task.Generate(700, 0.4, new Random(9), evaluation: true);
        var b = task.Generate(700, 0.4, new Random(9), evaluation: true);
        var c = task.Generate(700, 0.4, new Random(10), evaluation: true);
        Assert.Equal(a.Tokens, b.Tokens);
        Assert.NotEqual(a.Tokens, c.Tokens);
    }

    [Fact]
    public void ExamplesWorkWithABpeTokenizer()
    {
        var tokenizer = Tokenizers.FromSpecification("cl100k_base");
        foreach (string name in new[] { "passkey", "uuid", "qa2", "mqar" })
        {
            var task = Task(name, tokenizer);
            var example = task.Generate(500, 0.5, new Random(6), evaluation: true);
            Assert.Equal(500, example.Length);
            foreach (var answer in example.Answers)
                Assert.Equal(answer.Text, tokenizer.Decode(example.Tokens.AsSpan(answer.Start, answer.Length)));
            Assert.EndsWith(example.Answers[^1].Text, Text(example, tokenizer));
        }
    }

    [Fact]
    public void FillerEndsWhereASentenceEnds()
    {
        var haystack = Haystack.Noise(ByteTokenizer.Instance);
        var random = new Random(7);
        foreach (int count in new[] { 1, 7, 100, 12345 })
        {
            var (tokens, starts, _) = haystack.Take(count, random, evaluation: true);
            Assert.Equal(count, tokens.Length);
            string text = ByteTokenizer.Instance.Decode(tokens);
            Assert.True(text.EndsWith(". ") || count < 20, $"'{text[^Math.Min(20, text.Length)..]}' should end a sentence");
            foreach (int s in starts) Assert.True(s == 0 || text[s - 2] == '.', $"a sentence starts at {s}");
        }
    }
}

/// <summary>
/// Answers bAbI-style questions from the facts alone, by tracking people, objects and relations; written apart from the
/// generator so the two check each other.
/// </summary>
static class BabiSolver
{
    public static string Answer(IReadOnlyList<string> facts, string question)
    {
        var person = new Dictionary<string, string>();        // person → place
        var holder = new Dictionary<string, string>();        // object → person
        var objectAt = new Dictionary<string, List<string>>(); // object → places it has been, in order
        var relations = new List<(string Of, string Direction, string From)>();
        var gifts = new List<(string Giver, string Obj, string Receiver)>();
        void Put(string obj, string place)
        {
            var list = objectAt.TryGetValue(obj, out var l) ? l : objectAt[obj] = new List<string>();
            if (list.Count == 0 || list[^1] != place) list.Add(place);
        }
        foreach (string fact in facts)
        {
            Match m;
            if ((m = Regex.Match(fact, @"^(\w+) (?:moved|went|journeyed|travelled|went back) to the (\w+)\.$")).Success)
            {
                person[m.Groups[1].Value] = m.Groups[2].Value;
                foreach (var (obj, who) in holder) if (who == m.Groups[1].Value) Put(obj, m.Groups[2].Value);
            }
            else if ((m = Regex.Match(fact, @"^(\w+) (?:picked up|got|grabbed|took) the (\w+)\.$")).Success)
            {
                holder[m.Groups[2].Value] = m.Groups[1].Value;
                Put(m.Groups[2].Value, person[m.Groups[1].Value]);
            }
            else if ((m = Regex.Match(fact, @"^(\w+) (?:dropped|put down|discarded|left) the (\w+)\.$")).Success)
                holder.Remove(m.Groups[2].Value);
            else if ((m = Regex.Match(fact, @"^The (\w+) is (\w+) of the (\w+)\.$")).Success)
                relations.Add((m.Groups[1].Value, m.Groups[2].Value, m.Groups[3].Value));
            else if ((m = Regex.Match(fact, @"^(\w+) (?:gave|handed|passed) the (\w+) to (\w+)\.$")).Success)
                gifts.Add((m.Groups[1].Value, m.Groups[2].Value, m.Groups[3].Value));
            else throw new InvalidOperationException($"Unknown fact '{fact}'.");
        }
        Match q;
        if ((q = Regex.Match(question, @"^Where is (\w+)\?$")).Success && person.ContainsKey(q.Groups[1].Value)) return person[q.Groups[1].Value];
        if ((q = Regex.Match(question, @"^Where is the (\w+)\?$")).Success) return objectAt[q.Groups[1].Value][^1];
        if ((q = Regex.Match(question, @"^Where was the (\w+) before the (\w+)\?$")).Success)
        {
            var places = objectAt[q.Groups[1].Value];
            return places[places.LastIndexOf(q.Groups[2].Value) - 1];
        }
        if ((q = Regex.Match(question, @"^What is (\w+) of the (\w+)\?$")).Success)
            return relations.Single(r => r.Direction == q.Groups[1].Value && r.From == q.Groups[2].Value).Of;
        if ((q = Regex.Match(question, @"^What is the (\w+) (\w+) of\?$")).Success)
            return relations.Single(r => r.Of == q.Groups[1].Value && r.Direction == q.Groups[2].Value).From;
        if ((q = Regex.Match(question, @"^Who gave the (\w+) to (\w+)\?$")).Success)
            return gifts.Single(g => g.Obj == q.Groups[1].Value && g.Receiver == q.Groups[2].Value).Giver;
        if ((q = Regex.Match(question, @"^Who received the (\w+)\?$")).Success)
            return gifts.Single(g => g.Obj == q.Groups[1].Value).Receiver;
        if ((q = Regex.Match(question, @"^What did (\w+) give to (\w+)\?$")).Success)
            return gifts.Single(g => g.Giver == q.Groups[1].Value && g.Receiver == q.Groups[2].Value).Obj;
        throw new InvalidOperationException($"Unknown question '{question}'.");
    }
}
