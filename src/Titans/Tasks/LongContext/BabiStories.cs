namespace Titans.Tasks.LongContext;

/// <summary>A story of bAbI facts, in order, and a question whose one-word answer follows from them.</summary>
public sealed record BabiStory(IReadOnlyList<string> Facts, string Question, string Answer);

/// <summary>
/// Generators of the kinds of stories in bAbI tasks 1–5 (Weston et al., 2015), written here because the bAbI data is not
/// reachable: a small world of people, places and objects is simulated step by step, so every answer follows from the
/// facts. A story is drawn again when its question would be ambiguous.
/// </summary>
public static class BabiStories
{
    static readonly string[] People = { "Mary", "John", "Daniel", "Sandra" };
    static readonly string[] Places = { "bathroom", "hallway", "kitchen", "garden", "office", "bedroom" };
    static readonly string[] Objects = { "football", "apple", "milk" };
    static readonly string[] MoveVerbs = { "moved to", "went to", "journeyed to", "travelled to", "went back to" };
    static readonly string[] GrabVerbs = { "picked up", "got", "grabbed", "took" };
    static readonly string[] DropVerbs = { "dropped", "put down", "discarded", "left" };
    static readonly string[] GiveVerbs = { "gave", "handed", "passed" };
    static readonly string[] Directions = { "north", "south", "east", "west" };

    /// <summary>Facts per story, sized so a story and its question fit a 256-byte example.</summary>
    public static int DefaultFacts(int task) => task switch { 1 => 4, 2 => 5, 3 => 6, 4 => 2, _ => 4 };

    public static BabiStory Generate(int task, int facts, Random random)
    {
        for (int attempt = 0; attempt < 10_000; attempt++)
        {
            var story = task switch
            {
                1 => SingleSupportingFact(facts, random),
                2 or 3 => ObjectStory(task, facts, random),
                4 => TwoArgumentRelations(random),
                5 => ThreeArgumentRelations(facts, random),
                _ => throw new ArgumentException($"bAbI-style tasks are 1 to 5, got {task}."),
            };
            if (story is not null) return story;
        }
        throw new InvalidOperationException($"No answerable qa{task} story with {facts} facts after 10,000 draws.");
    }

    static T Pick<T>(IReadOnlyList<T> items, Random random) => items[random.Next(items.Count)];

    /// <summary>qa1: people move around; where is one of them now?</summary>
    static BabiStory? SingleSupportingFact(int facts, Random random)
    {
        var at = new Dictionary<string, string>();
        var lines = new List<string>();
        for (int i = 0; i < facts; i++)
        {
            string person = Pick(People, random);
            string place = Pick(Places.Where(p => at.GetValueOrDefault(person) != p).ToList(), random);
            at[person] = place;
            lines.Add($"{person} {Pick(MoveVerbs, random)} the {place}.");
        }
        string asked = Pick(at.Keys.Order().ToList(), random);
        return new BabiStory(lines, $"Where is {asked}?", at[asked]);
    }

    /// <summary>
    /// qa2 (where is the object? — it moves with whoever holds it) and qa3 (where was the object before the place it is
    /// in now?): people move, pick up and drop objects; an object can only be picked up where it lies.
    /// </summary>
    static BabiStory? ObjectStory(int task, int facts, Random random)
    {
        var at = new Dictionary<string, string>();
        var holder = new Dictionary<string, string>();        // object → person holding it
        var lies = new Dictionary<string, string>();          // object → place, once known
        var history = Objects.ToDictionary(o => o, _ => new List<string>());
        var lines = new List<string>();
        void Place(string obj, string place)
        {
            lies[obj] = place;
            if (history[obj].Count == 0 || history[obj][^1] != place) history[obj].Add(place);
        }
        while (lines.Count < facts)
        {
            string person = Pick(People, random);
            int action = random.Next(3);
            if (action == 0 || !at.ContainsKey(person))
            {
                string place = Pick(Places.Where(p => at.GetValueOrDefault(person) != p).ToList(), random);
                at[person] = place;
                foreach (var (obj, who) in holder) if (who == person) Place(obj, place);
                lines.Add($"{person} {Pick(MoveVerbs, random)} the {place}.");
            }
            else if (action == 1)
            {
                var free = Objects.Where(o => !holder.ContainsKey(o) && (!lies.ContainsKey(o) || lies[o] == at[person])).ToList();
                if (free.Count == 0) continue;
                string obj = Pick(free, random);
                holder[obj] = person;
                Place(obj, at[person]);
                lines.Add($"{person} {Pick(GrabVerbs, random)} the {obj}.");
            }
            else
            {
                var held = holder.Where(h => h.Value == person).Select(h => h.Key).Order().ToList();
                if (held.Count == 0) continue;
                string obj = Pick(held, random);
                holder.Remove(obj);
                lines.Add($"{person} {Pick(DropVerbs, random)} the {obj}.");
            }
        }
        if (task == 2)
        {
            // Two supporting facts: the object was carried, so its place comes from who took it and where they went.
            var candidates = Objects.Where(o => history[o].Count > 0).ToList();
            if (candidates.Count == 0) return null;
            string obj = Pick(candidates, random);
            return new BabiStory(lines, $"Where is the {obj}?", lies[obj]);
        }
        // Three supporting facts: the object has been in two places at least, and its current place only once.
        var moved = Objects.Where(o => history[o].Count >= 2 && history[o].Count(p => p == history[o][^1]) == 1).ToList();
        if (moved.Count == 0) return null;
        string item = Pick(moved, random);
        return new BabiStory(lines, $"Where was the {item} before the {history[item][^1]}?", history[item][^2]);
    }

    static string Opposite(string direction) => direction switch { "north" => "south", "south" => "north", "east" => "west", _ => "east" };

    /// <summary>qa4: "The a is d1 of the b. The c is d2 of the a."; what is d of x, or what is x d of?</summary>
    static BabiStory? TwoArgumentRelations(Random random)
    {
        var places = Places.OrderBy(_ => random.Next()).Take(3).ToArray();
        string d1 = Pick(Directions, random);
        string d2 = Pick(Directions.Where(d => d != Opposite(d1)).ToList(), random);   // else two places share a direction from a
        var relations = new[] { (Of: places[0], Direction: d1, From: places[1]), (Of: places[2], Direction: d2, From: places[0]) };
        var lines = relations.Select(r => $"The {r.Of} is {r.Direction} of the {r.From}.").OrderBy(_ => random.Next()).ToList();
        var asked = Pick(relations, random);
        return random.Next(2) == 0
            ? new BabiStory(lines, $"What is {asked.Direction} of the {asked.From}?", asked.Of)
            : new BabiStory(lines, $"What is the {asked.Of} {asked.Direction} of?", asked.From);
    }

    /// <summary>qa5: objects pass from hand to hand; who gave what to whom, who received it?</summary>
    static BabiStory? ThreeArgumentRelations(int facts, Random random)
    {
        var holder = new Dictionary<string, string>();
        var transfers = new List<(string Giver, string Obj, string Receiver)>();
        var lines = new List<string>();
        for (int i = 0; i < facts; i++)
        {
            string obj = Pick(Objects, random);
            string giver = holder.TryGetValue(obj, out var h) ? h : Pick(People, random);
            string receiver = Pick(People.Where(p => p != giver).ToList(), random);
            holder[obj] = receiver;
            transfers.Add((giver, obj, receiver));
            lines.Add($"{giver} {Pick(GiveVerbs, random)} the {obj} to {receiver}.");
        }
        var t = Pick(transfers, random);
        switch (random.Next(3))
        {
            case 0:
                if (transfers.Count(x => x.Obj == t.Obj && x.Receiver == t.Receiver) != 1) return null;
                return new BabiStory(lines, $"Who gave the {t.Obj} to {t.Receiver}?", t.Giver);
            case 1:
                if (transfers.Count(x => x.Obj == t.Obj) != 1) return null;
                return new BabiStory(lines, $"Who received the {t.Obj}?", t.Receiver);
            default:
                if (transfers.Count(x => x.Giver == t.Giver && x.Receiver == t.Receiver) != 1) return null;
                return new BabiStory(lines, $"What did {t.Giver} give to {t.Receiver}?", t.Obj);
        }
    }
}
