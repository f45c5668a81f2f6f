//! Worker threads for the backend listener: one single-threaded tokio runtime each, all
//! accepting from one listening socket.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Semaphore};

use crate::data::listener::{serve, ConnOptions};
use crate::data::proxy::ProxyState;
use crate::model::config::Validated;
use crate::process::descriptors;
use crate::process::error::ServeError;

/// A bound backend listener: the shared one, or an app's own.
pub struct Bound {
    /// The socket.
    pub listener: TcpListener,
    /// Its address, for errors.
    pub addr: std::net::SocketAddr,
    /// The app it serves alone, if it is an app's own.
    pub app: Option<Arc<str>>,
}

/// Starts the worker threads, each with a single-threaded runtime accepting from every
/// listener. The returned receiver yields `None` once every worker has drained and stopped.
pub fn spawn(
    listeners: Vec<Bound>,
    v: &Validated,
    state: &Arc<ProxyState>,
    stop: watch::Receiver<bool>,
) -> Result<mpsc::Receiver<()>, ServeError> {
    let io = |addr| move |source| ServeError::Bind { addr, source };
    let listeners = listeners
        .into_iter()
        .map(|b| Ok((b.listener.into_std().map_err(io(b.addr))?, b.addr, b.app)))
        .collect::<Result<Vec<_>, ServeError>>()?;
    let start = v.start_only();
    let workers = crate::data::workers::resolve(start.workers);
    let (cap, why) = descriptors::connection_cap(start.max_connections, descriptors::nofile());
    if let Some(why) = why {
        tracing::warn!("{why}");
    }
    let slots = Arc::new(Semaphore::new(cap));
    let opts = ConnOptions::from_config(v);
    let (done, all_done) = mpsc::channel(1);
    for i in 0..workers {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(ServeError::Runtime)?;
        let mine = {
            // Registers the sockets with this worker's runtime, so that a failure stops the start.
            let _in_rt = rt.enter();
            listeners
                .iter()
                .map(|(l, addr, app)| {
                    let l = TcpListener::from_std(l.try_clone().map_err(io(*addr))?);
                    Ok((l.map_err(io(*addr))?, app.clone()))
                })
                .collect::<Result<Vec<_>, ServeError>>()?
        };
        let (state, opts, slots, stop, done) = (
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
                    let serving = mine.into_iter().map(|(listener, app)| {
                        let mut stop = stop.clone();
                        let shutdown = async move {
                            let _ = stop.changed().await;
                        };
                        let (state, opts, slots) = (state.clone(), opts.clone(), slots.clone());
                        serve(listener, app, state, opts, slots, shutdown)
                    });
                    futures_util::future::join_all(serving).await;
                });
                // Dropping the runtime closes what the grace period left open.
                drop(rt);
                drop(done);
            })
            .map_err(ServeError::Runtime)?;
    }
    Ok(all_done)
}
