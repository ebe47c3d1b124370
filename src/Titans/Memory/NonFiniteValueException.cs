namespace Titans.Memory;

/// <summary>
/// NaN or infinity reached the neural memory, or its inner gradient descent diverged into them. A trainer turns this
/// into <see cref="Training.TrainingDivergedException"/>: the step is not applied.
/// </summary>
public sealed class NonFiniteValueException(string message) : ArithmeticException(message);
