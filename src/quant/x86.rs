//! AVX2 kernels.
use super::DotFn;
use crate::tensor::dtype::GgmlType;
pub(crate) fn kernel(_t: GgmlType) -> Option<DotFn> {
    None
}
