//! `tracer`: where a Kubernetes pod's packets die on a node. The library holds everything the
//! binary does, so fuzz targets and tests can reach the parsers directly.
pub mod aggregate;
pub mod bundle;
pub mod args;
pub mod cli;
pub mod doctor;
pub mod enrich;
pub mod filter;
pub mod floor;
pub mod kernel;
pub mod merge;
pub mod model;
pub mod netfilter;
pub mod netns;
pub mod path;
pub mod pipeline;
pub mod pods;
pub mod probes;
pub mod report;
pub mod session;
pub mod sinks;
pub mod watch;
