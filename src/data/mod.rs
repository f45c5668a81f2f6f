//! The data path: backend connections in, policy, certificate choice, the mTLS client out.

pub mod conn;
pub mod listener;
pub mod proxy;
pub mod tls;
pub mod upstream;
pub mod workers;
