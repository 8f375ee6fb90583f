//! `tracer`: where a Kubernetes pod's packets die on a node. The library holds everything the
//! binary does, so fuzz targets and tests can reach the parsers directly.
pub mod aggregate;
pub mod attribution;
pub mod bundle;
pub mod cli;
pub mod doctor;
pub mod events;
pub mod filter;
pub mod kernel;
pub mod netfilter;
pub mod netns;
pub mod output;
pub mod path;
pub mod pipeline;
pub mod pods;
pub mod probes;
pub mod report;
pub mod session;
