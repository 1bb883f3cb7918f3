//! The command line (owned by the CLI work; see issue 2).
