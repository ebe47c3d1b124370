using TorchSharp;
using static TorchSharp.torch;

namespace Titans.Runtime;

/// <summary>
/// Activation checkpointing for any function of tensors: <see cref="Apply"/> runs <c>f</c> without autograd and keeps
/// only its inputs; backward runs it again with autograd and back-propagates through that. The parameters <c>f</c> uses
/// are passed along so that their gradients flow. <c>f</c> must compute the same thing both times (no randomness).
/// </summary>
public static class Recomputation
{
    /// <summary>
    /// f(inputs) as one autograd node. <paramref name="parameters"/>: every tensor requiring grad that f reads besides
    /// its inputs (a module's parameters). Outputs that are not floating point carry no gradient.
    /// </summary>
    public static Tensor[] Apply(Func<Tensor[], Tensor[]> f, IReadOnlyList<Tensor> inputs, IEnumerable<Tensor> parameters)
    {
        var args = new List<object> { new Closure(f, inputs.Count) };
        args.AddRange(inputs);
        args.AddRange(parameters.Where(p => p.requires_grad));
        return RecomputedFunction.apply(args.ToArray()).ToArray();
    }

    sealed record Closure(Func<Tensor[], Tensor[]> F, int Inputs);

    sealed class RecomputedFunction : autograd.MultiTensorFunction<RecomputedFunction>
    {
        public override string Name => "Recomputation";

        public override List<Tensor> forward(autograd.AutogradContext ctx, params object[] vars)
        {
            var closure = (Closure)vars[0];
            var tensors = vars.Skip(1).Cast<Tensor>().ToList();
            ctx.save_for_backward(tensors.Take(closure.Inputs).ToList());
            ctx.save_data("closure", closure);
            ctx.save_data("parameters", tensors.Skip(closure.Inputs).ToArray());
            ctx.save_data("needs", tensors.Take(closure.Inputs).Select(t => t.requires_grad).ToArray());
            // A missing output gradient stays missing (zero): TorchSharp would fill it from a tensor it cached here, which the
            // caller's dispose scope has freed by backward time (docs/design.md).
            ctx.set_materialize_grads(false);
            Tensor[] inputs = tensors.Take(closure.Inputs).ToArray();
            var set = new HashSet<Tensor>(inputs, ReferenceEqualityComparer.Instance);
            var seen = new HashSet<Tensor>(ReferenceEqualityComparer.Instance);
            // Outputs must be new and distinct tensors.
            return closure.F(inputs).Select(t => set.Contains(t) || !seen.Add(t) ? t.clone() : t).ToList();
        }

        public override List<Tensor> backward(autograd.AutogradContext ctx, List<Tensor> gradOutputs)
        {
            var closure = (Closure)ctx.get_data("closure");
            var parameters = (Tensor[])ctx.get_data("parameters");
            try
            {
                using var scope = NewDisposeScope();
                var needs = (bool[])ctx.get_data("needs");
                List<Tensor> leaves = ctx.get_saved_variables().Select((t, i) => t.detach().requires_grad_(needs[i])).ToList();
                var wanted = leaves.Where(t => t.requires_grad).Concat(parameters).ToList();
                var grads = new Dictionary<Tensor, Tensor>(ReferenceEqualityComparer.Instance);
                using (enable_grad())
                {
                    var produced = closure.F(leaves.ToArray());
                    var pairs = produced.Zip(gradOutputs).Where(p => p.First.requires_grad && !p.Second.IsInvalid).ToList();
                    if (pairs.Count > 0 && wanted.Count > 0)
                    {
                        var computed = autograd.grad(pairs.Select(p => p.First).ToList(), wanted, pairs.Select(p => p.Second).ToList(), allow_unused: true);
                        for (int j = 0; j < wanted.Count; j++)
                            if (!computed[j].IsInvalid) grads[wanted[j]] = computed[j];
                    }
                }
                var result = new List<Tensor?> { null };
                result.AddRange(leaves.Select(t => grads.GetValueOrDefault(t)));
                result.AddRange(parameters.Select(p => grads.GetValueOrDefault(p)));
                scope.MoveToOuter(grads.Values);
                return result!;
            }
            catch (Exception e)
            {
                // An exception must not cross the native autograd engine (the process would die): kept for the trainer to
                // rethrow after backward (BackwardFailures), with NaN gradients meanwhile so nothing steps on them.
                BackwardFailures.Record(e);
                var needs = (bool[])ctx.get_data("needs");
                var result = new List<Tensor?> { null };
                result.AddRange(ctx.get_saved_variables().Select((t, i) => needs[i] ? full_like(t, double.NaN) : null));
                result.AddRange(parameters.Select(p => full_like(p, double.NaN)));
                return result!;
            }
        }
    }
}
