//! Running graphs without allocating per token.
//!
//! ggml's scheduler rebuilds a context for every graph it splits, and ggml's
//! graph allocator re-plans (freeing and allocating its tables) whenever the
//! graph differs from the one it planned last. A session alternates between a
//! handful of graph shapes every token (the first step with the prelude,
//! later steps, checks with and without the coda), so both would allocate on
//! every token. [`Compute`] avoids that:
//!
//! - On a single device that runs every op of the session's graphs (the CPU
//!   always; a GPU when ggml's device supports each node), graphs run directly
//!   on the backend, without the scheduler. Each graph *shape* (an opaque key
//!   the session derives from what the graph contains) gets its own graph
//!   allocator, planned once for the shape's largest size (the full context),
//!   so later graphs of that shape only place tensors at planned offsets.
//!   Multi-token batches (the prompt) share one allocator that re-plans when
//!   the shape changes: allocating there is per prompt, not per token.
//! - On the CPU, graphs run through `ggml_graph_plan` / `ggml_graph_compute`
//!   with a work buffer sized at planning time and the session's threadpool.
//! - Otherwise (a GPU that lacks some op), ggml's scheduler splits graphs
//!   between the device and the CPU as before; that path allocates per graph
//!   inside ggml.

use super::backend::{Backend, Scheduler};
use super::context::Graph;
use super::sys;
use crate::error::{Error, Result};
use std::ptr::NonNull;

/// A graph allocator (ggml-alloc) planned for one graph shape.
struct Planned {
    key: u64,
    galloc: NonNull<sys::ggml_gallocr>,
}

impl Drop for Planned {
    fn drop(&mut self) {
        // SAFETY: created by us, freed once.
        unsafe { sys::ggml_gallocr_free(self.galloc.as_ptr()) }
    }
}

/// Graphs planned and run on one device without the scheduler.
struct Direct {
    buft: sys::ggml_backend_buffer_type_t,
    /// One allocator per single-token graph shape.
    shapes: Vec<Planned>,
    /// The allocator of multi-token batches and the shape it last planned.
    batch: Option<Planned>,
    /// CPU work buffer (`ggml_graph_plan`'s `work_size`), sized when planning.
    work: Vec<u8>,
}

enum Mode {
    Direct(Direct),
    Scheduled(Scheduler),
}

/// How a session's graphs are allocated and run (see the module docs).
pub(crate) struct Compute {
    mode: Mode,
}

// SAFETY: owned by one session and used through &mut; ggml allocators and
// buffer types are plain data not tied to a thread.
unsafe impl Send for Compute {}

/// Whether an allocator is for one token or for a batch of several.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Shape {
    /// A single-token graph of the given shape key.
    Token(u64),
    /// A multi-token graph of the given shape key.
    Batch(u64),
}

impl Compute {
    /// Direct execution on `backend`'s main device (see
    /// [`Compute::fit_to`] for devices that lack some op).
    pub(crate) fn new(backend: &Backend) -> Compute {
        Compute {
            mode: Mode::Direct(Direct {
                buft: backend.buffer_type(),
                shapes: Vec::new(),
                batch: None,
                work: Vec::new(),
            }),
        }
    }

    /// Switches to ggml's scheduler when the device cannot run every node of
    /// `probe` (the session's largest graph) itself. The CPU runs everything.
    pub(crate) fn fit_to(
        &mut self,
        backend: &Backend,
        graph_size: usize,
        probe: &Graph,
    ) -> Result<()> {
        // RD_GGML_SCHEDULER=1 forces the scheduler on GPUs (for comparisons).
        let forced = std::env::var_os("RD_GGML_SCHEDULER").is_some_and(|v| v == "1");
        if self.is_direct() && !backend.is_cpu() && (forced || !backend.supports_graph(probe)) {
            self.mode = Mode::Scheduled(backend.scheduler(graph_size)?);
        }
        Ok(())
    }

    /// Whether graphs bypass the scheduler.
    pub(crate) fn is_direct(&self) -> bool {
        matches!(self.mode, Mode::Direct(_))
    }

    /// Whether `shape` has a plan already (single-token shapes only; batches
    /// re-plan on demand).
    pub(crate) fn is_planned(&self, shape: Shape) -> bool {
        match (&self.mode, shape) {
            (Mode::Direct(d), Shape::Token(k)) => d.shapes.iter().any(|p| p.key == k),
            _ => true,
        }
    }

    /// Plans memory for `graph`, the largest graph of `shape` (allocates).
    pub(crate) fn reserve(
        &mut self,
        backend: &Backend,
        shape: Shape,
        graph: &mut Graph,
    ) -> Result<()> {
        match &mut self.mode {
            Mode::Scheduled(s) => s.reserve(graph),
            Mode::Direct(d) => {
                let planned = match shape {
                    Shape::Token(key) => match d.shapes.iter().position(|p| p.key == key) {
                        Some(i) => &mut d.shapes[i],
                        None => {
                            let p = Planned {
                                key,
                                galloc: new_gallocr(d.buft)?,
                            };
                            d.shapes.try_reserve(1).map_err(|_| oom("graph plans"))?;
                            d.shapes.push(p);
                            d.shapes.last_mut().ok_or_else(|| oom("graph plans"))?
                        }
                    },
                    Shape::Batch(key) => {
                        if d.batch.is_none() {
                            d.batch = Some(Planned {
                                key,
                                galloc: new_gallocr(d.buft)?,
                            });
                        }
                        let b = d.batch.as_mut().ok_or_else(|| oom("graph plans"))?;
                        b.key = key;
                        b
                    }
                };
                // SAFETY: valid allocator and graph.
                if !unsafe { sys::ggml_gallocr_reserve(planned.galloc.as_ptr(), graph.g.as_ptr()) }
                {
                    return Err(oom("compute buffer reservation"));
                }
                if backend.is_cpu() {
                    let need = backend.cpu_work_size(graph);
                    if need > d.work.len() {
                        grow(&mut d.work, need)?;
                    }
                }
                Ok(())
            }
        }
    }

    /// Places the graph's intermediate tensors in the memory planned for its
    /// shape. A single-token shape with no plan yet is planned here first
    /// (that allocates once); a batch re-plans when its shape changed.
    pub(crate) fn alloc(
        &mut self,
        backend: &Backend,
        shape: Shape,
        graph: &mut Graph,
    ) -> Result<()> {
        let replan = match (&self.mode, shape) {
            (Mode::Scheduled(_), _) => false,
            (Mode::Direct(d), Shape::Batch(k)) => d.batch.as_ref().is_none_or(|b| b.key != k),
            (Mode::Direct(_), Shape::Token(_)) => !self.is_planned(shape),
        };
        if replan {
            self.reserve(backend, shape, graph)?;
        }
        match &mut self.mode {
            Mode::Scheduled(s) => s.alloc(graph),
            Mode::Direct(d) => {
                let galloc = match shape {
                    Shape::Token(k) => d.shapes.iter().find(|p| p.key == k).map(|p| p.galloc),
                    Shape::Batch(_) => d.batch.as_ref().map(|p| p.galloc),
                }
                .ok_or_else(|| Error::Backend("graph shape was not planned".into()))?;
                // SAFETY: valid allocator and graph; the plan was made for this
                // shape at its largest size, so nothing is re-planned here.
                if unsafe { sys::ggml_gallocr_alloc_graph(galloc.as_ptr(), graph.g.as_ptr()) } {
                    Ok(())
                } else {
                    Err(oom("compute graph allocation"))
                }
            }
        }
    }

    /// Runs a graph whose nodes all write into tensors that already have
    /// memory (copies between cache slots): nothing to plan.
    pub(crate) fn run_in_place(&mut self, backend: &mut Backend, graph: &mut Graph) -> Result<()> {
        match &mut self.mode {
            Mode::Scheduled(s) => {
                s.alloc(graph)?;
                s.compute(graph)
            }
            Mode::Direct(_) => {
                graph.init_views()?;
                self.compute(backend, graph)
            }
        }
    }

    /// Runs an allocated graph to completion (or until the abort flag is raised).
    pub(crate) fn compute(&mut self, backend: &mut Backend, graph: &mut Graph) -> Result<()> {
        match &mut self.mode {
            Mode::Scheduled(s) => s.compute(graph),
            Mode::Direct(d) if backend.is_cpu() => backend.cpu_compute(graph, &mut d.work),
            Mode::Direct(_) => backend.device_compute(graph),
        }
    }

    /// Devices a graph was split between: 1 when run directly.
    pub(crate) fn n_splits(&self) -> usize {
        match &self.mode {
            Mode::Scheduled(s) => s.n_splits(),
            Mode::Direct(_) => 1,
        }
    }

    /// Bytes of compute memory held (planned buffers and the CPU work buffer).
    pub(crate) fn compute_bytes(&self, backend: &Backend) -> usize {
        match &self.mode {
            Mode::Scheduled(s) => s.compute_bytes(backend),
            Mode::Direct(d) => {
                let size = |p: &Planned| {
                    // SAFETY: valid allocator with one buffer.
                    unsafe { sys::ggml_gallocr_get_buffer_size(p.galloc.as_ptr(), 0) }
                };
                d.shapes.iter().map(size).sum::<usize>()
                    + d.batch.as_ref().map(size).unwrap_or(0)
                    + d.work.len()
            }
        }
    }
}

fn new_gallocr(buft: sys::ggml_backend_buffer_type_t) -> Result<NonNull<sys::ggml_gallocr>> {
    // SAFETY: a valid buffer type of the session's backend.
    NonNull::new(unsafe { sys::ggml_gallocr_new(buft) }).ok_or_else(|| oom("graph allocator"))
}

fn grow(work: &mut Vec<u8>, need: usize) -> Result<()> {
    work.try_reserve_exact(need - work.len())
        .map_err(|_| oom("CPU work buffer"))?;
    work.resize(need, 0);
    Ok(())
}

fn oom(what: &str) -> Error {
    Error::OutOfMemory(what.into())
}
