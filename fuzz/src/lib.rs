//! The parts of mailkeep the fuzz targets drive: the mbox reader, the message and envelope
//! handling, and the exit statuses they name, from the mailkeep library as it is.

pub use mailkeep::{envelope, exit, mbox, message, time};
