//! A readable, summarised rendering of a tensor's values.

use super::Tensor;
use std::fmt;

/// Entries shown at each end of a long dimension.
const EDGE: usize = 3;
/// Dimensions longer than this are summarised with `...`.
const SUMMARISE_OVER: usize = 8;

fn write_dim(
    f: &mut fmt::Formatter<'_>,
    values: &[f64],
    shape: &[usize],
    depth: usize,
    is_float: bool,
) -> fmt::Result {
    if shape.is_empty() {
        return write_value(f, values[0], is_float);
    }
    let n = shape[0];
    let inner: usize = shape[1..].iter().product();
    let shown: Vec<Option<usize>> = if n > SUMMARISE_OVER {
        (0..EDGE)
            .map(Some)
            .chain([None])
            .chain((n - EDGE..n).map(Some))
            .collect()
    } else {
        (0..n).map(Some).collect()
    };
    f.write_str("[")?;
    for (k, entry) in shown.iter().enumerate() {
        if k > 0 {
            if shape.len() > 1 {
                write!(f, ",\n{}", " ".repeat(depth + 8))?;
            } else {
                f.write_str(", ")?;
            }
        }
        match entry {
            Some(i) => write_dim(
                f,
                &values[i * inner..(i + 1) * inner],
                &shape[1..],
                depth + 1,
                is_float,
            )?,
            None => f.write_str("...")?,
        }
    }
    f.write_str("]")
}

fn write_value(f: &mut fmt::Formatter<'_>, v: f64, is_float: bool) -> fmt::Result {
    if !is_float {
        write!(f, "{v}")
    } else if v != 0.0 && (v.abs() >= 1e4 || v.abs() < 1e-4) {
        write!(f, "{v:.4e}")
    } else {
        write!(f, "{v:.4}")
    }
}

impl fmt::Display for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let values = self.to_vec_f64().map_err(|_| fmt::Error)?;
        f.write_str("tensor(")?;
        if self.numel() == 0 {
            f.write_str("[]")?;
        } else {
            write_dim(f, &values, self.shape(), 0, self.dtype().is_float())?;
        }
        write!(
            f,
            ", shape={:?}, dtype={}, device={})",
            self.shape(),
            self.dtype(),
            self.device()
        )
    }
}
