"""The HDF5 file layout (one self-describing file per run). Writers: :mod:`landscape.store`;
readers: :mod:`landscape.results`. Changing anything here bumps ``FORMAT_VERSION``.

::

    /                         attrs: format="landscape", format_version, landscape_version,
                                     torch_version, created (ISO 8601), command (argv string),
                                     config (JSON: every option that shaped the numbers),
                                     model_fingerprint (sha256 of θ), data_fingerprint, title
    /coords/{x,y,z}           float64 1-D; only the axes in use (1D: x; 2D: x, y; 3D: x, y, z)
    /directions/{x,y,z}/<p>   float32, one dataset per tensor name <p> ("layers.0.weight");
                              group attrs: kind (random|hessian|interp|pca|plane|file), norm,
                              ignore, dir_type, seed, orthogonalized, eigenvalue (hessian),
                              scale (coordinate unit: ‖d‖), explained_variance (pca)
    /surfaces/<split>_<metric>  float64, shape = grid shape (nx,), (nx,ny) or (nx,ny,nz);
                              Z[i,j,k] is the value at (x[i], y[j], z[k]); NaN = not computed.
                              split ∈ {train, test}; metric ∈ {loss, acc, lambda_max,
                              lambda_min, convexity}
    /surfaces/done            uint8, grid shape, 1 where a point is computed
                              (these datasets are contiguous and allocated whole; files of earlier
                              versions have ~512-element chunks for grids of 65,536 points or more)
    /samples/<split>          int64 (n,): with --samples, the indices of the evaluated examples
                              in the data set (sorted); attrs: of (the data set's size), seed.
                              Absent when every example is used.
    /paths/<name>/alpha       float64 (n,)       name: "interpolation" (θ₀→θ₁) by default
    /paths/<name>/<split>_loss, <split>_acc      float64 (n,), NaN = not computed
    /paths/<name>/done        uint8 (n,)
                              attrs: bumps (JSON list of [alpha_start, alpha_peak, height]),
                              n_bumps, max_bump, monotonic (bool), tolerance, distance ‖θ₁−θ₀‖,
                              relative_distance, barrier, bn_reestimated (bool)
    /trajectory/coords        float64 (n_checkpoints, 2): each checkpoint projected on (x, y)
    /trajectory               attrs: explained_variance (list), checkpoints (JSON list of paths)
    /curvature/eigenvalues    float64 (k,), descending; attrs: method, tol, iterations, matvecs,
                              seed, residuals (list)
    /curvature/eigenvectors/<i>/<p>   float32 (optional)
    /curvature/smallest       float64 scalar (optional)
    /curvature/trace          float64 scalar; attrs: stderr, method, matvecs, seed
    /curvature/density/grid, /curvature/density/values   float64 (m,); attrs: runs, steps, sigma
    /curvature/{ggn,fisher}/...  the same datasets for ``hessian --operator ggn|fisher`` (attrs: operator)
    /track                    ``landscape track`` (a file of kind "track", or a group added to another file);
                              attrs: identity, config (JSON), checkpoints (JSON list), operator, lr, top_k, seed
    /track/step               int64 (n,): the checkpoints' training steps, increasing
    /track/done               uint8 (n,), 1 where a checkpoint is computed (written after its rows)
    /track/<quantity>         float64 (n,), NaN = not computed: <split>_loss, <split>_acc, lambda_max,
                              lambda_min, eos_ratio, trace, trace_stderr, negative_mass, grad_norm,
                              grad_overlap, update_sharpness, update_grad_corr, update_cosine,
                              update_norm, eigen_converged, subspace_overlap, sharpness/<metric>
    /track/eigenvalues        float64 (n, k); /track/eigenvectors float32 (n, k, P) (flattened)
    /track/slq_nodes, /track/slq_weights   float64 (n, runs, steps)
    /track/density/grid (m,), /track/density/values (n, m), /track/density/sigma: made at the end
    /metrics/<name>           float64 scalar or array; attrs: the parameters used (JSON-able)
    /layerwise/<quantity>     float64 (n_layers,) per-layer arrays; attrs: layers (JSON list)

Li et al.'s loss-landscape files (``xcoordinates``, ``ycoordinates``, ``train_loss``,
``train_acc``, ``test_loss``, ``test_acc`` at the root) are read too; their 2D arrays are stored
as Z[j, i] (meshgrid order) and are transposed on read so that Z[i, j] is at (x[i], y[j]).
Attributes hold only strings, numbers and arrays of numbers: nothing is ever unpickled.
"""

FORMAT = "landscape"
FORMAT_VERSION = 1
AXES = ("x", "y", "z")
SPLITS = ("train", "test")
SURFACE_METRICS = ("loss", "acc", "lambda_max", "lambda_min", "convexity")
LI_ET_AL_KEYS = ("xcoordinates", "ycoordinates", "zcoordinates")
