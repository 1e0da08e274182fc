//! Error type shared by the whole crate: every public function returns [`Result`].

use std::path::PathBuf;

/// Everything that can go wrong in smith, as a value with a message that names the op,
/// the shapes or the file involved.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Two shapes that must agree do not.
    #[error("{op}: shape mismatch between {lhs:?} and {rhs:?}")]
    ShapeMismatch {
        op: &'static str,
        lhs: Vec<usize>,
        rhs: Vec<usize>,
    },
    /// A dimension index is out of range for the tensor's rank.
    #[error("{op}: dimension {dim} is out of range for a tensor of shape {shape:?}")]
    DimOutOfRange {
        op: &'static str,
        dim: usize,
        shape: Vec<usize>,
    },
    /// The op does not support this dtype.
    #[error("{op}: dtype {dtype} is not supported")]
    UnsupportedDType {
        op: &'static str,
        dtype: crate::DType,
    },
    /// Two inputs of one op have different dtypes.
    #[error("{op}: dtype mismatch between {lhs} and {rhs}")]
    DTypeMismatch {
        op: &'static str,
        lhs: crate::DType,
        rhs: crate::DType,
    },
    /// Two inputs of one op live on different devices.
    #[error("{op}: device mismatch between {lhs} and {rhs}")]
    DeviceMismatch {
        op: &'static str,
        lhs: crate::Device,
        rhs: crate::Device,
    },
    /// The requested device cannot be used.
    #[error("device {device} is not available: {reason}")]
    DeviceUnavailable {
        device: crate::Device,
        reason: String,
    },
    /// Any other invalid argument to an op, with an explanation.
    #[error("{op}: {msg}")]
    InvalidArgument { op: &'static str, msg: String },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A checkpoint or weight file is malformed or does not fit the model.
    #[error("checkpoint {path}: {msg}")]
    Checkpoint { path: PathBuf, msg: String },
    /// A JSON document could not be parsed or written.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    /// A safetensors file could not be parsed or written.
    #[error("safetensors: {0}")]
    SafeTensors(#[from] safetensors::SafeTensorError),
}

impl Error {
    /// Shorthand for [`Error::InvalidArgument`].
    pub fn invalid(op: &'static str, msg: impl Into<String>) -> Self {
        Error::InvalidArgument {
            op,
            msg: msg.into(),
        }
    }

    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;
