//! The `smith` tool's own modules: subcommands and helpers that are not library API.

pub mod bench;
pub mod corpus;
pub mod info;
pub mod interrupt;
pub mod plot;
