//! The corpus `smith train` uses when given no text: eight of Shakespeare's plays (public
//! domain, about 1.1 MB), built into the tool (not the library).

/// The bundled corpus.
pub const SHAKESPEARE: &str = include_str!("../../data/shakespeare.txt");
