#![allow(unreachable_pub, missing_docs)]

//! Integration tests: the real server on 127.0.0.1:0, real DNS packets over
//! UDP and TCP.

mod admin_hardening;
mod admin_ui;
mod config_files;
mod diff;
mod dnssec;
mod dnssec_refresh;
mod fast_path;
mod fuzz_findings;
mod geo_routing;
mod geo_scale;
mod harness;
mod health;
mod latency;
mod metrics;
mod packaging;
mod policies;
mod probe_types;
mod probes;
mod protocol;
mod protocol_hardening;
mod querylog;
mod reload_api;
mod reload_zones;
mod robustness;
mod rrl;
mod rum_beacon;
mod tcp_hardening;
mod wildcards;
mod zonefile;
