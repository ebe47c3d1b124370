using System.Globalization;
using TorchSharp;
using Titans.Forecasting;
using Titans.Memory;
using Titans.Models;
using Titans.Training;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Titans.Tests.Forecasting;

/// <summary>CSV input, the split and normalization (no leakage), the forecasters, their checkpoints and bad input.</summary>
public class ForecastingTests(ITestOutputHelper output)
{
    /// <summary>A CSV of a date column and the given columns, one row per step.</summary>
    static string[] Csv(int rows, params (string Name, Func<int, double> Value)[] columns) =>
        new[] { "date," + string.Join(",", columns.Select(c => c.Name)) }
            .Concat(Enumerable.Range(0, rows).Select(r => $"{new DateTime(2020, 1, 1).AddHours(r):yyyy-MM-dd HH:mm:ss}," +
                                                          string.Join(",", columns.Select(c => c.Value(r).ToString("R", CultureInfo.InvariantCulture)))))
            .ToArray();

    static readonly ForecastSplit SmallSplit = new(60, 80, 100);

    [Fact]
    public void NormalizationUsesTrainingRowsOnly()
    {
        // Two series equal on the training rows and wildly different after them: a split or a normalization that looked
        // past the training rows would see the difference.
        var a = TimeSeriesTable.Parse(Csv(100, ("x", r => Math.Sin(r)), ("y", r => r)), "a");
        var b = TimeSeriesTable.Parse(Csv(100, ("x", r => r < 60 ? Math.Sin(r) : 1000 + r), ("y", r => r < 60 ? r : -5000)), "b");
        using var da = new ForecastData(a, SmallSplit, lookback: 8, horizon: 4);
        using var db = new ForecastData(b, SmallSplit, lookback: 8, horizon: 4);
        Assert.Equal(da.Mean, db.Mean);
        Assert.Equal(da.Deviation, db.Deviation);
        double mean = Enumerable.Range(0, 60).Average(r => (double)r);
        Assert.Equal(mean, da.Mean[1], 12);
        Assert.Equal(Math.Sqrt(Enumerable.Range(0, 60).Average(r => (r - mean) * (r - mean))), da.Deviation[1], 12);
        // Every training window, inputs and targets, is the same in both; so no training target lies past row 60.
        int windows = da.WindowCount(ForecastPart.Train);
        Assert.Equal(60 - 8 - 4 + 1, windows);
        var starts = da.Starts(ForecastPart.Train, 0, windows);
        var (xa, ya) = da.Windows(starts);
        var (xb, yb) = db.Windows(starts);
        Assert.True(xa.eq(xb).all().item<bool>() && ya.eq(yb).all().item<bool>(), "a training window saw rows after the training part");
    }

    [Fact]
    public void ValidationAndTestWindowsReadTheirLookbackFromEarlierRowsAndTargetOnlyTheirPart()
    {
        var table = TimeSeriesTable.Parse(Csv(100, ("x", r => r)), "t");
        using var data = new ForecastData(table, SmallSplit, lookback: 8, horizon: 4);
        foreach (var (part, begin, end) in new[] { (ForecastPart.Validation, 60, 80), (ForecastPart.Test, 80, 100) })
        {
            var starts = data.Starts(part, 0, data.WindowCount(part));
            Assert.Equal(end - begin - 4 + 1, starts.Length);
            Assert.Equal(begin - 8, starts[0]);                 // the first target is the part's first row
            Assert.Equal(end - 4 - 8, starts[^1]);              // the last target is the part's last row
        }
    }

    [Fact]
    public void EttSplitIsTheStandardOne()
    {
        var split = ForecastSplit.Parse("auto", "data/ett/ETTh1.csv", 17420);
        Assert.Equal(new ForecastSplit(8640, 11520, 14400), split);
        Assert.Equal(new ForecastSplit(70, 80, 100), ForecastSplit.Parse("auto", "other.csv", 100));
        Assert.Equal(new ForecastSplit(60, 80, 100), ForecastSplit.Parse("0.6,0.2", "other.csv", 100));
    }

    [Fact]
    public void TheRepositoryEttFileLoadsWithTheStandardWindowCounts()
    {
        var table = TimeSeriesTable.Load(Path.Combine(RepositoryRoot(), "data", "ett", "ETTh1.csv"));
        Assert.Equal(new[] { "HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT" }, table.Columns);
        Assert.Equal(17420, table.Rows);
        using var data = new ForecastData(table, ForecastSplit.EttHourly, 96, 96);
        Assert.Equal(8449, data.WindowCount(ForecastPart.Train));
        Assert.Equal(2785, data.WindowCount(ForecastPart.Validation));
        Assert.Equal(2785, data.WindowCount(ForecastPart.Test));
    }

    static string RepositoryRoot()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "Titans.slnx"))) dir = dir.Parent;
        return dir?.FullName ?? throw new InvalidOperationException("The repository root was not found.");
    }

    [Theory]
    [InlineData("date,x\n1,1.5\n2,\n", "empty")]
    [InlineData("date,x\n1,1.5\n2,abc\n", "'abc', which is not a finite number")]
    [InlineData("date,x\n1,1.5\n2,NaN\n", "not a finite number")]
    [InlineData("date,x\n1,1.5\n2,3,4\n", "3 cells, the header has 2")]
    [InlineData("", "empty")]
    [InlineData("date,x\n", "no data rows")]
    [InlineData("date,x,x\n1,2,3\n", "twice")]
    [InlineData("date,x\nhello,1.5\n2,2\n", "line 2: the date column holds 'hello', which is not a date and time")]
    [InlineData("date,x\n2016-07-01 01:00:00,1.5\n2016-07-01 00:00:00,2\n", "line 3: date '2016-07-01 00:00:00' is not after the row before's ('2016-07-01 01:00:00'); rows must run oldest first")]
    [InlineData("date,x\n5,1.5\n5,2\n", "line 3: date '5' is not after")]
    public void MalformedCsvIsAnErrorNamingTheProblem(string text, string expected)
    {
        var e = Assert.Throws<InvalidDataException>(() => TimeSeriesTable.Parse(text.Split('\n'), "f.csv"));
        Assert.Contains(expected, e.Message);
        Assert.Contains("f.csv", e.Message);
    }

    [Fact]
    public void UnknownColumnsConstantColumnsAndTooFewRowsAreErrors()
    {
        string[] csv = Csv(100, ("x", r => Math.Sin(r)), ("flat", _ => 3.0));
        Assert.Contains("has no column 'nope'", Assert.Throws<ArgumentException>(() => TimeSeriesTable.Parse(csv, "f.csv", columns: new[] { "x", "nope" })).Message);
        var table = TimeSeriesTable.Parse(csv, "f.csv");
        Assert.Contains("column 'flat' is constant", Assert.Throws<ArgumentException>(() => new ForecastData(table, SmallSplit, 8, 4)).Message);
        var onlyX = TimeSeriesTable.Parse(csv, "f.csv", columns: new[] { "x" });
        Assert.Contains("too few", Assert.Throws<ArgumentException>(() => new ForecastData(onlyX, SmallSplit, 8, 30)).Message);
        Assert.Contains("needs 14400", Assert.Throws<ArgumentException>(() => new ForecastData(onlyX, ForecastSplit.EttHourly, 96, 96)).Message);
        Assert.Contains("target column 'y'", Assert.Throws<ArgumentException>(() => new ForecastData(onlyX, SmallSplit, 8, 4, new[] { "y" })).Message);
    }

    /// <summary>Values near the ends of double's range: their squares overflow, which made every deviation infinite and every z-score 0.</summary>
    [Fact]
    public void HugeValuesAreZScoredAsTheirSmallCopiesAndOnesBeyondFloat32AreRefused()
    {
        var small = TimeSeriesTable.Parse(Csv(100, ("x", r => Math.Sin(r / 3.0) + 2)), "small");
        var huge = TimeSeriesTable.Parse(Csv(100, ("x", r => 1e155 * (Math.Sin(r / 3.0) + 2))), "huge");
        using var a = new ForecastData(small, SmallSplit, 8, 4);
        using var b = new ForecastData(huge, SmallSplit, 8, 4);
        Assert.Equal(1e155 * a.Deviation[0], b.Deviation[0], 1e143);
        Assert.True((a.Values - b.Values).abs().max().item<float>() < 1e-5, "the z-scores of the huge series are not those of the small one");
        var outlier = TimeSeriesTable.Parse(Csv(100, ("x", r => r == 90 ? 1e300 : Math.Sin(r))), "outlier");
        var e = Assert.Throws<ArgumentException>(() => new ForecastData(outlier, SmallSplit, 8, 4));
        Assert.Contains("row 91 of column 'x' holds 1E+300", e.Message);
        Assert.Contains("more than float32 holds", e.Message);
    }

    [Fact]
    public void QuotedCellsAndOptionalDatesParse()
    {
        var table = TimeSeriesTable.Parse(new[] { "\"when, exactly\",a,b", "\"Jan 1, 2020\",1,2", "\"Jan 2, 2020\",3,4" }, "q.csv", dateColumn: "when, exactly");
        Assert.Equal(new[] { "a", "b" }, table.Columns);
        Assert.Equal(new[] { "Jan 1, 2020", "Jan 2, 2020" }, table.Dates);
        // A numeric time column (hours, a Unix time) is read as numbers, even where the date parser would take "1.5" for a date.
        Assert.Equal(new[] { "0.5", "1.5", "12.5" }, TimeSeriesTable.Parse(new[] { "date,x", "0.5,1", "1.5,2", "12.5,3" }, "n.csv").Dates);
        var undated = TimeSeriesTable.Parse(new[] { "a,b", "1,2", "3,4" }, "u.csv");
        Assert.Null(undated.Dates);
        Assert.Equal(4.0, undated.Values[1, 1]);
    }

    static ForecasterConfig Tiny(ForecastModelKind kind, Architecture architecture, int channels = 2, int lookback = 48, int horizon = 12) => new()
    {
        Kind = kind, Channels = channels, Lookback = lookback, Horizon = horizon, PatchLength = 8, PatchStride = 8, Dropout = 0,
        InstanceNormalization = kind == ForecastModelKind.Patch, MovingAverage = 5,
        Backbone = new TitansConfig
        {
            Architecture = architecture, VocabSize = 2, ModelDim = 16, Layers = 1, Heads = 2, Window = 4, SegmentLength = 4, PersistentTokens = 2,
            Memory = new NeuralMemoryConfig { ModelDim = 16, Heads = 2, Depth = 2, Expansion = 2, ChunkSize = 2 },
        },
    };

    [Theory]
    [InlineData(ForecastModelKind.DLinear, Architecture.Lmm)]
    [InlineData(ForecastModelKind.Patch, Architecture.Lmm)]
    [InlineData(ForecastModelKind.Patch, Architecture.TransformerPlusPlus)]
    public void TinyForecasterBeatsTheNaiveForecastOnASeasonalSeries(ForecastModelKind kind, Architecture architecture)
    {
        // Two channels: a daily cycle with a slow drift, and the same cycle shifted, each with noise.
        var noise = new Random(3);
        var table = TimeSeriesTable.Parse(Csv(1000,
            ("a", r => Math.Sin(2 * Math.PI * r / 24) + 0.001 * r + 0.1 * (noise.NextDouble() - 0.5)),
            ("b", r => 0.5 * Math.Cos(2 * Math.PI * r / 24) + 0.1 * (noise.NextDouble() - 0.5))), "seasonal");
        using var data = new ForecastData(table, new ForecastSplit(700, 850, 1000), lookback: 48, horizon: 12);
        using var naive = Forecaster.Create(Tiny(ForecastModelKind.Naive, architecture));
        double naiveMse = ForecastTraining.Score(naive, data, ForecastPart.Test).Mse;
        manual_seed(1);
        using var model = Forecaster.Create(Tiny(kind, architecture));
        var training = new TrainingConfig { Steps = 150, BatchSize = 16, SequenceLength = 48, LearningRate = 3e-3, WarmupSteps = 10, Beta2 = 0.999, WeightDecay = 0 };
        var fit = ForecastTraining.Fit(model, data, training, evaluateEvery: 50, patience: 3);
        var score = ForecastTraining.Score(model, data, ForecastPart.Test);
        output.WriteLine($"{Forecaster.Describe(model.Config)}: test MSE {score.Mse:F4} (naive {naiveMse:F4}), best step {fit.BestStep}, {fit.Elapsed.TotalSeconds:F1} s");
        Assert.True(score.Mse < 0.25 * naiveMse, $"test MSE {score.Mse:F4} is not well below the naive forecast's {naiveMse:F4}");
    }

    [Fact]
    public void TrainingLossesAreTheirFormulasOnTheTargetColumnsOnly()
    {
        var table = TimeSeriesTable.Parse(Csv(200, ("x", r => Math.Sin(r / 5.0)), ("y", r => Math.Cos(r / 7.0))), "two");
        using var data = new ForecastData(table, SmallSplit, 8, 4, new[] { "y" });
        // Errors on y: 0.5 and 2 (one inside Huber's quadratic zone, one beyond it); x's huge error must not count.
        Tensor targets = zeros(1, 2, 2), forecast = zeros(1, 2, 2);
        forecast[0, 0, 1] = tensor(0.5f);
        forecast[0, 1, 1] = tensor(-2f);
        forecast[0, .., 0] = tensor(100f);
        double Loss(ForecastLoss loss) => ForecastTraining.Loss(forecast, targets, data, loss).item<float>();
        Assert.Equal((0.25 + 4) / 2, Loss(ForecastLoss.Mse), 5);
        Assert.Equal((0.5 + 2) / 2, Loss(ForecastLoss.Mae), 5);
        Assert.Equal((0.5 * 0.25 + (2 - 0.5)) / 2, Loss(ForecastLoss.Huber), 5);
        Assert.Equal(Loss(ForecastLoss.Mse), ForecastTraining.Loss(forecast, targets, data).item<float>(), 6);
    }

    [Fact]
    public void AForecasterTrainedOnMaeAlsoBeatsTheNaiveForecast()
    {
        var table = TimeSeriesTable.Parse(Csv(1000, ("a", r => Math.Sin(2 * Math.PI * r / 24) + 0.001 * r)), "seasonal");
        using var data = new ForecastData(table, new ForecastSplit(700, 850, 1000), lookback: 48, horizon: 12);
        using var naive = Forecaster.Create(Tiny(ForecastModelKind.Naive, Architecture.Lmm, channels: 1));
        double naiveMse = ForecastTraining.Score(naive, data, ForecastPart.Test).Mse;
        manual_seed(1);
        using var model = Forecaster.Create(Tiny(ForecastModelKind.DLinear, Architecture.Lmm, channels: 1));
        var training = new TrainingConfig { Steps = 150, BatchSize = 16, SequenceLength = 48, LearningRate = 3e-3, WarmupSteps = 10, Beta2 = 0.999, WeightDecay = 0 };
        ForecastTraining.Fit(model, data, training, evaluateEvery: 50, patience: 3, loss: ForecastLoss.Mae);
        double mse = ForecastTraining.Score(model, data, ForecastPart.Test).Mse;
        Assert.True(mse < 0.25 * naiveMse, $"test MSE {mse:F4} is not well below the naive forecast's {naiveMse:F4}");
    }

    [Fact]
    public void NaiveForecastRepeatsTheLastValueAndDLinearOfAConstantIsItsBias()
    {
        using var naive = Forecaster.Create(Tiny(ForecastModelKind.Naive, Architecture.Lmm));
        Tensor x = randn(3, 48, 2);
        Tensor y = naive.forward(x);
        Assert.Equal(new long[] { 3, 12, 2 }, y.shape);
        Assert.True(y.eq(x[.., ^1..].expand(-1, 12, -1)).all().item<bool>());
        // A constant window is all trend (the padded moving average of a constant is the constant): zero the trend map and
        // DLinear returns its two biases.
        using var dlinear = Forecaster.Create(Tiny(ForecastModelKind.DLinear, Architecture.Lmm));
        var parameters = dlinear.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        using (no_grad()) parameters["trend.weight"].zero_();
        Tensor constant = full(1, 48, 2, 5.0f);
        Tensor bias = parameters["seasonal.bias"] + parameters["trend.bias"];
        Assert.True(dlinear.forward(constant)[0, .., 0].allclose(bias, 1e-5, 1e-5));
    }

    [Theory]
    [InlineData(ForecastModelKind.DLinear, Architecture.Lmm)]
    [InlineData(ForecastModelKind.Patch, Architecture.Lmm)]
    [InlineData(ForecastModelKind.Patch, Architecture.Mac)]
    [InlineData(ForecastModelKind.Patch, Architecture.Mag)]
    [InlineData(ForecastModelKind.Patch, Architecture.Mal)]
    [InlineData(ForecastModelKind.Patch, Architecture.TransformerPlusPlus)]
    public void CheckpointRoundTripGivesTheSameForecasts(ForecastModelKind kind, Architecture architecture)
    {
        var table = TimeSeriesTable.Parse(Csv(100, ("x", r => Math.Sin(r)), ("y", r => Math.Cos(r / 3.0))), "t");
        using var data = new ForecastData(table, SmallSplit, 48, 12, new[] { "y" });
        manual_seed(2);
        using var model = Forecaster.Create(Tiny(kind, architecture));
        model.eval();
        string path = Path.Combine(Path.GetTempPath(), $"forecaster-{Guid.NewGuid():N}.safetensors");
        try
        {
            ForecasterCheckpoint.Save(path, model, data);
            var (loaded, header) = ForecasterCheckpoint.Load(path);
            using (loaded)
            {
                Assert.Equal(new[] { "x", "y" }, header.Columns);
                Assert.Equal(new[] { "y" }, header.Targets);
                Assert.Equal(data.Mean, header.Mean);
                var (inputs, _) = data.Windows(data.Starts(ForecastPart.Test, 0, 5));
                Assert.True(model.forward(inputs).eq(loaded.forward(inputs)).all().item<bool>());
            }
        }
        finally { File.Delete(path); }
    }

    [Fact]
    public void ALanguageModelCheckpointGivenToForecastingIsNamedAsSuch()
    {
        string dir = Path.Combine(Path.GetTempPath(), $"lm-{Guid.NewGuid():N}");
        Directory.CreateDirectory(dir);
        try
        {
            string path = Path.Combine(dir, "checkpoint.safetensors");
            var training = new TrainingConfig { Steps = 1, BatchSize = 1, SequenceLength = 8 };
            using var trainer = new Trainer(new TitansLanguageModel("model", Tiny(ForecastModelKind.Patch, Architecture.Lmm).Backbone with { VocabSize = 256 }),
                training, new TokenData(Enumerable.Range(0, 400).Select(i => (long)(i % 50)).ToArray(), 0.1, 8));
            Checkpoint.Save(path, trainer, new Titans.Text.ByteTokenizer());
            trainer.Model.Dispose();
            var e = Assert.Throws<InvalidDataException>(() => ForecasterCheckpoint.Load(path));
            Assert.Contains("is a language model checkpoint", e.Message);
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void AForecasterGivenToALanguageModelCommandIsNamedAsSuch()
    {
        var table = TimeSeriesTable.Parse(Csv(100, ("x", r => Math.Sin(r))), "t");
        using var data = new ForecastData(table, SmallSplit, 48, 12);
        using var model = Forecaster.Create(Tiny(ForecastModelKind.DLinear, Architecture.Lmm, channels: 1));
        string path = Path.Combine(Path.GetTempPath(), $"forecaster-{Guid.NewGuid():N}.safetensors");
        try
        {
            ForecasterCheckpoint.Save(path, model, data);
            Assert.Contains("is a forecaster checkpoint", Assert.Throws<InvalidDataException>(() => Checkpoint.LoadModel(path)).Message);
        }
        finally { File.Delete(path); }
    }

    [Fact]
    public void AForecasterWithNonFiniteWeightsIsRejectedOnLoadNamingTheTensor()
    {
        var table = TimeSeriesTable.Parse(Csv(100, ("x", r => Math.Sin(r))), "t");
        using var data = new ForecastData(table, SmallSplit, 48, 12);
        using var model = Forecaster.Create(Tiny(ForecastModelKind.DLinear, Architecture.Lmm, channels: 1));
        using (no_grad()) model.named_parameters().First(p => p.name == "trend.weight").parameter[0, 0] = float.NaN;
        string path = Path.Combine(Path.GetTempPath(), $"nan-{Guid.NewGuid():N}.safetensors");
        try
        {
            ForecasterCheckpoint.Save(path, model, data);
            Assert.Contains("'trend.weight' holds NaN", Assert.Throws<InvalidDataException>(() => ForecasterCheckpoint.Load(path)).Message);
        }
        finally { File.Delete(path); }
    }

    [Fact]
    public void AWrongInputShapeIsAnError()
    {
        using var model = Forecaster.Create(Tiny(ForecastModelKind.Patch, Architecture.Lmm));
        Assert.Contains("takes [batch, 48, 2]", Assert.Throws<ArgumentException>(() => model.forward(randn(2, 40, 2))).Message);
    }
}
