//! Integration tests: one binary, real sockets on 127.0.0.1 with OS-chosen ports.

// Test code: a panic is a failed test.
#![allow(clippy::unwrap_used)]

mod support;

mod admin;
mod attack_findings;
mod audit;
mod auth_limits;
mod authcode_test;
mod clock;
mod config_check;
mod console;
mod differential;
mod discovery;
mod dynamic_fields;
mod edge;
mod errors;
mod fast_path;
mod forwarding;
mod fuzz_corpus;
mod grant_life;
mod grants_admin;
mod injection;
mod jwt_auth;
mod limits;
mod mock_authorize;
mod oauth;
mod oauth1_flow;
mod pipeline;
mod presets;
mod profile_form;
mod properties;
mod reload;
mod replicas;
mod secret_mask;
mod sign_phase;
mod sign_test;
mod signing;
mod store;
mod tls;
mod token_shapes;
mod user_auth;
mod webhooks;
