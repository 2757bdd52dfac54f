"""CFlow-AD's decoder, as github.com/gudovskiy/cflow-ad builds it (`freia_cflow_head`): FrEIA
AllInOneBlocks with a positional-encoding condition, clamp 1.9, softplus global affine, a random
rotation. FrEIA's PyPI release (0.2) soft-clamps with `clamp * tanh(a)`; CFlow-AD's FrEIA (and the
reference vectors, commit 4212496) use `clamp * tanh(a / clamp)`: CflowBlock overrides that method.
Shared by tests/reference/freia_grads.py and tests/reference/cflow_train.py."""
import torch
import FrEIA.framework as Ff
import FrEIA.modules as Fm


class CflowBlock(Fm.AllInOneBlock):
    """AllInOneBlock with the soft clamp of CFlow-AD's FrEIA: clamp * tanh(a / clamp)."""

    def _affine(self, x, a, rev=False):
        a = a * 0.1
        ch = x.shape[1]
        sub_jac = self.clamp * torch.tanh(a[:, :ch] / self.clamp)
        if not rev:
            return x * torch.exp(sub_jac) + a[:, ch:], torch.sum(sub_jac, dim=self.sum_dims)
        return (x - a[:, ch:]) * torch.exp(-sub_jac), -torch.sum(sub_jac, dim=self.sum_dims)


def subnet_fc(dims_in, dims_out):
    """CFlow-AD's subnet: Linear(d, 2d) -> ReLU -> Linear(2d, out)."""
    return torch.nn.Sequential(torch.nn.Linear(dims_in, 2 * dims_in), torch.nn.ReLU(),
                               torch.nn.Linear(2 * dims_in, dims_out))


def cflow_head(channels, blocks=8, condition=128, clamp=1.9, permute_soft=True):
    """`freia_cflow_head`: a SequenceINN of `blocks` coupling blocks for `channels`."""
    coder = Ff.SequenceINN(channels)
    for _ in range(blocks):
        coder.append(CflowBlock, cond=0, cond_shape=(condition,), subnet_constructor=subnet_fc,
                     affine_clamping=clamp, global_affine_type="SOFTPLUS",
                     permute_soft=permute_soft)
    return coder
