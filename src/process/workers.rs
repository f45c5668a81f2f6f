//! Worker threads for the backend listener: one single-threaded tokio runtime each, all
//! accepting from one listening socket.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Semaphore};

use crate::data::listener::{serve, ConnOptions};
use crate::data::proxy::ProxyState;
use crate::model::config::Validated;
use crate::process::server::ServeError;

/// Starts the worker threads, each with a single-threaded runtime accepting from `listener`.
/// The returned receiver yields `None` once every worker has drained and stopped.
pub fn spawn(
    listener: TcpListener,
    v: &Validated,
    state: &Arc<ProxyState>,
    stop: watch::Receiver<bool>,
) -> Result<mpsc::Receiver<()>, ServeError> {
    let io = |source| ServeError::Bind {
        addr: v.listen,
        source,
    };
    let listener = listener.into_std().map_err(io)?;
    let start = v.start_only();
    let workers = crate::data::workers::resolve(start.workers);
    let slots = Arc::new(Semaphore::new(start.max_connections));
    let opts = ConnOptions::from_config(v);
    let (done, all_done) = mpsc::channel(1);
    for i in 0..workers {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(ServeError::Runtime)?;
        let listener = {
            // Registers the socket with this worker's runtime, so that a failure stops the start.
            let _in_rt = rt.enter();
            TcpListener::from_std(listener.try_clone().map_err(io)?).map_err(io)?
        };
        let (state, opts, slots, mut stop, done) = (
            state.clone(),
            opts.clone(),
            slots.clone(),
            stop.clone(),
            done.clone(),
        );
        std::thread::Builder::new()
            .name(format!("worker-{i}"))
            .spawn(move || {
                crate::data::workers::set_index(i);
                rt.block_on(async move {
                    let shutdown = async move {
                        let _ = stop.changed().await;
                    };
                    serve(listener, state, opts, slots, shutdown).await;
                });
                // Dropping the runtime closes what the grace period left open.
                drop(rt);
                drop(done);
            })
            .map_err(ServeError::Runtime)?;
    }
    Ok(all_done)
}
