using Titans.Text;

namespace Titans.Tasks.LongContext;

/// <summary>
/// BABILong-style reasoning (Kuratov et al., 2024): the facts of a bAbI task 1–5 story scattered in order at random
/// sentence starts through a real-text haystack, then "question Answer: " and the one-word answer. The depth is not a
/// parameter: facts are spread over the whole context, as in BABILong.
/// </summary>
public sealed class BabiTask : ILongContextTask
{
    readonly int task;
    readonly int facts;
    readonly Haystack haystack;
    readonly ExampleAssembler assembler;

    public BabiTask(int task, ITokenizer tokenizer, Haystack haystack, int? facts = null)
    {
        if (task is < 1 or > 5) throw new ArgumentException($"BABILong-style tasks are qa1 to qa5, got qa{task}.");
        this.task = task;
        this.facts = facts ?? BabiStories.DefaultFacts(task);
        this.haystack = haystack;
        assembler = new ExampleAssembler(Name, tokenizer, haystack);
        // The longest a story can be: the longest fact sentences and question for this task's vocabulary.
        var random = new Random(0);
        MinimumLength = Enumerable.Range(0, 200).Select(_ => Pieces(BabiStories.Generate(task, this.facts, random)))
            .Max(p => assembler.Count(p.Facts.SelectMany(f => f)) + assembler.Count(p.Tail));
        assembler.MinimumLength = MinimumLength;
    }

    public string Name => $"qa{task}";
    public string Description => task switch
    {
        1 => "BABILong qa1: single supporting fact (where is a person?)",
        2 => "BABILong qa2: two supporting facts (where is an object someone carried?)",
        3 => "BABILong qa3: three supporting facts (where was an object before?)",
        4 => "BABILong qa4: two-argument relations (what is north of a place?)",
        _ => "BABILong qa5: three-argument relations (who gave what to whom?)",
    } + $", {facts} facts in {haystack.Name}";

    public bool HasDepth => false;
    public int MinimumLength { get; }

    static (List<Piece[]> Facts, Piece[] Tail) Pieces(BabiStory story) =>
        (story.Facts.Select(f => new[] { new Piece(f + " ") }).ToList(),
         new[] { new Piece($"{story.Question} Answer: "), new Piece(story.Answer, IsAnswer: true) });

    public TaskExample Generate(int length, double depth, Random random, bool evaluation)
    {
        var story = BabiStories.Generate(task, facts, random);
        var (factPieces, tail) = Pieces(story);
        var positions = factPieces.Select(_ => random.NextDouble()).Order().ToList();
        var insertions = positions.Zip(factPieces, (p, f) => (p, (IReadOnlyList<Piece>)f)).ToList();
        return assembler.Assemble(length, double.NaN, insertions, tail, random, evaluation, story.Facts, story.Question);
    }
}
