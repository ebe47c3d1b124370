using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Titans.Dna;

/// <summary>
/// The CNN baseline (in the manner of GenomicsBenchmarks' own CNN): nucleotide embedding, three convolutions (kernel 9,
/// ReLU, batch normalization, max-pooling by 2 after the first two), global average pooling and a linear head.
/// <paramref name="channels"/> sets its size, chosen to match the other models' parameter count.
/// </summary>
public sealed class ConvolutionalClassifier : nn.Module<Tensor, Tensor>
{
    readonly Embedding embedding;
    readonly Conv1d conv1, conv2, conv3;
    readonly BatchNorm1d norm1, norm2, norm3;
    readonly Linear class_head;

    public ConvolutionalClassifier(int vocabulary, int embeddingDim, int channels, int classes) : base("cnn")
    {
        embedding = nn.Embedding(vocabulary, embeddingDim);
        conv1 = nn.Conv1d(embeddingDim, channels, 9, padding: 4);
        conv2 = nn.Conv1d(channels, channels, 9, padding: 4);
        conv3 = nn.Conv1d(channels, channels, 9, padding: 4);
        norm1 = nn.BatchNorm1d(channels);
        norm2 = nn.BatchNorm1d(channels);
        norm3 = nn.BatchNorm1d(channels);
        class_head = nn.Linear(channels, classes);
        RegisterComponents();
    }

    public static long ParameterCount(int vocabulary, int embeddingDim, int channels, int classes) =>
        (long)vocabulary * embeddingDim + (embeddingDim * 9L + 1) * channels + 2 * (channels * 9L + 1) * channels + 3 * 2L * channels + (channels + 1L) * classes;

    /// <summary>The channel count whose parameter count comes closest to <paramref name="target"/>.</summary>
    public static int ChannelsFor(long target, int vocabulary, int embeddingDim, int classes) =>
        Enumerable.Range(4, 2048).MinBy(c => Math.Abs(ParameterCount(vocabulary, embeddingDim, c, classes) - target));

    public override Tensor forward(Tensor tokens)
    {
        using var scope = NewDisposeScope();
        Tensor x = embedding.forward(tokens).transpose(1, 2);               // [B, E, T]
        x = nn.functional.max_pool1d(norm1.forward(nn.functional.relu(Convolve(conv1, x))), 2);
        x = nn.functional.max_pool1d(norm2.forward(nn.functional.relu(Convolve(conv2, x))), 2);
        x = norm3.forward(nn.functional.relu(Convolve(conv3, x)));
        return class_head.forward(x.mean(new long[] { 2 })).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The "same" convolution of <paramref name="x"/> [B, C, T] by <paramref name="conv"/>'s weight and bias, as padded
    /// windows times the weight (im2col). libtorch's CPU conv1d kernel gave non-finite outputs or gradients now and then
    /// here with identical inputs (docs/dna.md); this form has not.
    /// </summary>
    internal static Tensor Convolve(Conv1d conv, Tensor x)
    {
        long kernel = conv.weight!.shape[2], half = kernel / 2;
        Tensor windows = nn.functional.pad(x, new[] { half, half }).unfold(2, kernel, 1);           // [B, C, T, k]
        Tensor output = einsum("bctk,ock->bot", windows, conv.weight);
        return output + conv.bias!.unsqueeze(-1);
    }
}
