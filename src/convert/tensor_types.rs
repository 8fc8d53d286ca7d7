//! The type each planned tensor is written as: the per-expert table, then name patterns, then
//! the matrix type, then the source's own type; a float type where the rows are not a whole
//! number of the wanted type's blocks.

#![forbid(unsafe_code)]

use super::{ConvertOptions, Fallback, Planned, Role};
use crate::tensor::GgmlType;
use crate::{Error, Result};

/// Pattern for `--expert-type`: every routed expert matrix of the packed layout.
pub const EXPERT_PATTERN: &str = "blk.*.ffn_*.*.weight";
/// Pattern for `--attn-type`: every attention matrix.
pub const ATTENTION_PATTERN: &str = "blk.*.attn_*";

/// Whether `name` matches the glob `pattern` (`*`: any run of characters, `?`: one).
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni) = (0, 0);
    // Where the last `*` was, and how much of `name` it has taken so far.
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// The type a tensor of `role` is stored as, falling back to a float type when its rows are
/// not a whole number of quantisation blocks.
fn target_type(
    name: &str,
    role: Role,
    dims: &[u64],
    opts: &ConvertOptions,
    keep_source: GgmlType,
) -> GgmlType {
    let Some(wanted) = wanted_type(name, role, opts, keep_source) else {
        return GgmlType::F32;
    };
    if dims[0] % wanted.block_len() as u64 != 0 {
        GgmlType::F16
    } else {
        wanted
    }
}

/// The type asked for a tensor of `role`, before any fallback; `None` for small tensors
/// (always f32).
fn wanted_type(
    name: &str,
    role: Role,
    opts: &ConvertOptions,
    keep_source: GgmlType,
) -> Option<GgmlType> {
    let by_name = || {
        opts.overrides
            .iter()
            .rev()
            .find(|(p, _)| glob_match(p, name))
            .map(|&(_, t)| t)
    };
    Some(match role {
        Role::Small => return None,
        Role::Matrix => by_name().or(opts.matrix_type).unwrap_or(keep_source),
        // A per-expert table is more specific than a name pattern.
        Role::Expert(l, e) => opts
            .expert_types
            .as_ref()
            .and_then(|t| t.get(l).and_then(|r| r.get(e)).copied())
            .or_else(by_name)
            .or(opts.matrix_type)
            .unwrap_or(keep_source),
    })
}

/// Refuses an override pattern that matches no matrix of `plan` (a typo would otherwise go
/// unnoticed).
pub(super) fn check_overrides(plan: &[Planned<'_>], opts: &ConvertOptions) -> Result<()> {
    for (pattern, _) in &opts.overrides {
        let used = plan
            .iter()
            .any(|p| p.role != Role::Small && glob_match(pattern, &p.name));
        if !used {
            return Err(Error::InvalidArgument(format!(
                "type override `{pattern}` matches no weight matrix (names look like blk.0.attn_q.weight, blk.0.ffn_up.3.weight, output.weight)"
            )));
        }
    }
    Ok(())
}

/// The type each tensor of `plan` is written as, and the tensors written as another type
/// than the one asked for. Matrices no option names keep their source type with
/// `keep_source`, else become f16.
pub(super) fn choose_types(
    plan: &[Planned<'_>],
    opts: &ConvertOptions,
    keep_source: bool,
) -> (Vec<GgmlType>, Vec<Fallback>) {
    let keep = |p: &Planned<'_>| {
        if keep_source {
            p.source_type
        } else {
            GgmlType::F16
        }
    };
    let types: Vec<GgmlType> = plan
        .iter()
        .map(|p| target_type(&p.name, p.role, &p.dims, opts, keep(p)))
        .collect();
    let fallbacks: Vec<Fallback> = plan
        .iter()
        .zip(&types)
        .filter_map(|(p, &written)| {
            let wanted = wanted_type(&p.name, p.role, opts, keep(p))?;
            (wanted != written).then(|| Fallback {
                tensor: p.name.clone(),
                wanted,
                written,
                row_len: p.dims[0],
            })
        })
        .collect();
    (types, fallbacks)
}

#[cfg(test)]
mod tests {
    use super::{glob_match, EXPERT_PATTERN};

    #[test]
    fn globs() {
        assert!(glob_match("blk.*.attn_*", "blk.12.attn_q.weight"));
        assert!(glob_match(EXPERT_PATTERN, "blk.3.ffn_down.7.weight"));
        assert!(!glob_match(EXPERT_PATTERN, "blk.3.ffn_down_shexp.weight"));
        assert!(!glob_match(EXPERT_PATTERN, "blk.3.ffn_norm.weight"));
        assert!(glob_match("output.weight", "output.weight"));
        assert!(glob_match("blk.?.attn_v*", "blk.4.attn_v.weight"));
        assert!(!glob_match("blk.?.attn_v*", "blk.14.attn_v.weight"));
        assert!(glob_match("*", ""));
        assert!(!glob_match("a*b", "acbd"));
        assert!(glob_match("a*b*", "acbd"));
    }
}
