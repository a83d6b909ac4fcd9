//! Connections: the accept loop (HTTP/1.1 and HTTP/2, cleartext by prior knowledge or over TLS
//! by ALPN), the split of gRPC calls from HTTP requests on one listener, and the TLS
//! certificate that can be reloaded while serving.

mod connection;
pub mod protocols;
pub mod server;
pub mod tls;

pub use protocols::Protocols;
pub use server::{ConnectionLimits, Server};
pub use tls::Tls;
