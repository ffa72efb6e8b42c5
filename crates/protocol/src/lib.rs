//! Sans-io Kafka wire protocol for Vltava: frame bounds, request headers, record batch v2
//! validation and header rewriting, and error codes. No sockets, no files, no panics on input.

pub mod batch;
pub mod bounds;
pub mod compression;
pub mod fetch;
pub mod frame;
pub mod records;
#[cfg(feature = "testing")]
pub mod testing;

pub use kafka_protocol;
