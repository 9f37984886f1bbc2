package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/urfave/cli/v2"

	"github.com/avatargen/musetalk/blob"
	"github.com/avatargen/musetalk/control"
	"github.com/avatargen/musetalk/control/loadgen"
	"github.com/avatargen/musetalk/control/store"
	"github.com/avatargen/musetalk/control/store/postgres"
	"github.com/avatargen/musetalk/control/store/sqlite"
	"github.com/avatargen/musetalk/telemetry"
)

func benchControlCommand() *cli.Command {
	return &cli.Command{
		Name:      "control",
		Usage:     "load the control plane with simulated workers and submissions; check exactly-once delivery",
		UsageText: "musetalk bench control [--db FILE|postgres://… [--replicas N] | --url URL[,URL…]] [options]",
		Description: `Simulates --workers workers against a control plane: each sends a
heartbeat every --heartbeat-interval (0: back to back, as fast as they are
answered) and, unless --cycles=false, claims a job, "renders" for --work
(its heartbeats then name the attempt and its progress), uploads an output
of --output-bytes through the control plane (--upload direct: straight
into the object store, as workers with B2 credentials do) and completes
it, in a loop, while --submitters keep --queue-depth jobs waiting. --prefill jobs are
submitted before the clock starts. After --duration it reports, per kind
of call, the calls answered per second, the p50, p99 and max latency, the
errors and stale (409) answers, the claim → upload → complete cycles per
second, the CPU time this process used per answered call (steadier than
the rates on a shared machine) and the load average before and after.

Every answer is checked for exactly-once delivery: an attempt handed out
by two claims, a call of an attempt accepted after a later attempt of the
same job was claimed, or a job completed twice is a violation, printed,
and the command exits non-zero; so it does when a call failed (a
transport error or an unexpected answer; a stale attempt's 409 is not a
failure).

Without --url it starts the control plane in this process, on a loopback
port, with the same code and defaults as musetalk control: SQLite in a
temporary directory (or --db FILE), or PostgreSQL when --db is a
postgres:// URL, in a new schema (analyzed after the prefill, so that the
planner knows the queue) that is dropped afterwards; --replicas
starts several control planes on that one database, the workers spread
over them. Its log (--log-level, --log-format) goes to control.log and its
objects under the work directory (or --objects-dir). The figures then
include the generator, which runs on the same cores (and heap: GOGC=400 as
in musetalk control, unless GOGC is set), and its simulated workers' writes
into the object store with --upload direct (B2's, in a deployment, run on
B2's machines: --objects-dir /dev/shm leaves most of their cost out).

With --url it loads a running control plane (give its worker key and, if
its public API needs one, a public key). It submits and completes real
jobs there: never point it at a production deployment.

Progress goes to stderr: on a terminal one line redrawn every second,
elsewhere a line every 5 seconds.`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "url", Usage: "load the control plane at this URL (comma-separated: replicas) instead of starting one"},
			&cli.StringFlag{Name: "internal-api-key", Usage: "with --url: the worker API's key", EnvVars: []string{"INTERNAL_API_KEY"}},
			&cli.StringFlag{Name: "api-key", Usage: "with --url: the public API's key, when it needs one", EnvVars: []string{"MUSETALK_API_KEY"}},
			&cli.StringFlag{Name: "db", Usage: "in-process control plane: a SQLite file, or a postgres:// URL (a new schema is made and dropped)", DefaultText: "SQLite in the work directory"},
			&cli.IntFlag{Name: "replicas", Value: 1, Usage: "in-process control planes sharing the PostgreSQL --db"},
			&cli.StringFlag{Name: "work-dir", Usage: "directory for the in-process control plane's database, objects and log", DefaultText: "a temporary directory, removed afterwards"},
			&cli.StringFlag{Name: "objects-dir", Usage: "keep the in-process control plane's object store in a new directory under this one, removed afterwards: on a tmpfs (/dev/shm) its writes leave the figures, as B2's do for workers that upload there (--upload direct)", DefaultText: "blobs under the work directory"},
			&cli.IntFlag{Name: "workers", Value: loadgen.DefaultWorkers, Usage: "simulated workers"},
			&cli.DurationFlag{Name: "duration", Value: loadgen.DefaultDuration, Usage: "how long calls are started; cycles in progress finish afterwards"},
			&cli.DurationFlag{Name: "heartbeat-interval", Value: control.DefaultHeartbeatInterval, Usage: "each worker's heartbeat period (0: back to back)"},
			&cli.BoolFlag{Name: "cycles", Value: true, Usage: "run claim → upload → complete cycles and submissions"},
			&cli.DurationFlag{Name: "work", Usage: "simulated render time of each attempt, between claim and upload"},
			&cli.DurationFlag{Name: "idle-wait", Value: loadgen.DefaultIdleWait, Usage: "how long a worker waits after a claim found nothing"},
			&cli.IntFlag{Name: "submitters", Value: loadgen.DefaultSubmitters, Usage: "concurrent submitters (-1: none; the workers run through the --prefill jobs)"},
			&cli.IntFlag{Name: "queue-depth", Usage: "submitters pause while this many submitted jobs are unclaimed", DefaultText: "2 per worker"},
			&cli.IntFlag{Name: "prefill", Usage: "jobs submitted before the clock starts (-1: none)", DefaultText: "--queue-depth"},
			&cli.IntFlag{Name: "output-bytes", Value: loadgen.DefaultOutputBytes, Usage: "size of each uploaded output"},
			&cli.StringFlag{Name: "upload", Value: "control", Usage: "where workers upload outputs: control (PUT through the control plane) or direct (into the in-process control plane's object store themselves, as workers with B2 credentials write to B2; complete checks the object there)"},
			&cli.StringFlag{Name: "cpuprofile", Usage: "write a CPU profile of the whole process (generator and in-process control plane), from the start of the clock, to this file"},
			&cli.StringFlag{Name: "memprofile", Usage: "write an allocation profile to this file at the end"},
		},
		Action: runBenchControl,
	}
}

func runBenchControl(c *cli.Context) error {
	setControlGC() // as musetalk control does; the generator shares the heap
	ctx := c.Context
	cfg := loadgen.Config{
		Workers: c.Int("workers"), Duration: c.Duration("duration"), HeartbeatInterval: c.Duration("heartbeat-interval"),
		Cycles: c.Bool("cycles"), Work: c.Duration("work"), IdleWait: c.Duration("idle-wait"),
		Submitters: c.Int("submitters"), QueueDepth: c.Int("queue-depth"), OutputBytes: c.Int("output-bytes"),
		Prefill: c.Int("prefill"),
	}
	if cfg.Workers < 1 {
		return fmt.Errorf("--workers %d: must be at least 1", cfg.Workers)
	}
	upload := c.String("upload")
	switch {
	case upload != "control" && upload != "direct":
		return fmt.Errorf("--upload %q: want control or direct", upload)
	case upload == "direct" && c.String("url") != "":
		return errors.New("--upload direct writes into the in-process control plane's object store; with --url the control plane is elsewhere (use --upload control)")
	}
	where := ""
	var analyze func(context.Context) error
	if u := c.String("url"); u != "" {
		if c.IsSet("db") || c.IsSet("replicas") || c.IsSet("work-dir") || c.IsSet("objects-dir") {
			return errors.New("--db, --replicas, --work-dir and --objects-dir configure the in-process control plane; they do not go with --url")
		}
		cfg.URLs = splitKeys(u)
		cfg.InternalKey, cfg.PublicKey = c.String("internal-api-key"), c.String("api-key")
		if cfg.InternalKey == "" {
			return errors.New("--url needs the control plane's worker key: --internal-api-key or INTERNAL_API_KEY")
		}
		where = strings.Join(cfg.URLs, ", ")
	} else {
		lc, err := startLocalControl(ctx, c)
		if err != nil {
			return err
		}
		defer lc.close()
		cfg.URLs, cfg.InternalKey, cfg.PublicKey = lc.urls, lc.internalKey, lc.publicKey
		analyze = lc.analyze
		if upload == "direct" {
			cfg.Direct = lc.blob
		}
		where = "in-process, " + lc.desc
	}

	// The profile, like the CPU time, starts with the clock (after the
	// prefill).
	var startProfile func() error
	if p := c.String("cpuprofile"); p != "" {
		f, err := os.Create(p)
		if err != nil {
			return fmt.Errorf("--cpuprofile: %w", err)
		}
		defer f.Close()
		startProfile = func() error { return pprof.StartCPUProfile(f) }
		defer pprof.StopCPUProfile()
	}

	out, errw := c.App.Writer, c.App.ErrWriter
	if errw == nil {
		errw = os.Stderr
	}
	fmt.Fprintf(out, "bench control: %s; %d workers, heartbeat %s, cycles %v, %v; GOMAXPROCS %d; load %s\n",
		where, cfg.Workers, every(cfg.HeartbeatInterval), cfg.Cycles, cfg.Duration, runtime.GOMAXPROCS(0), loadAvg())
	prog := newRateLine(errw, isTerminal(errw))
	cfg.OnProgress = prog.show
	var cpu0 time.Duration
	var profileErr, analyzeErr error
	cfg.OnStart = func() {
		// A new schema filled in seconds has no planner statistics yet,
		// which a running deployment's tables have (autovacuum analyzes
		// them within a minute or so of a burst): the bench measures that
		// steady state.
		if analyze != nil {
			analyzeErr = analyze(ctx)
		}
		if startProfile != nil {
			profileErr = startProfile()
		}
		cpu0 = cpuTime()
	}
	res, runErr := loadgen.Run(ctx, cfg)
	cpu := cpuTime() - cpu0
	prog.done()
	if profileErr != nil {
		return fmt.Errorf("--cpuprofile: %w", profileErr)
	}
	if analyzeErr != nil {
		return fmt.Errorf("analyzing the bench schema after the prefill: %w", analyzeErr)
	}
	if res != nil {
		if err := res.WriteText(out); err != nil {
			return err
		}
		// On a shared machine the CPU time per call is steadier than the
		// rates: it does not depend on how much of the CPU others took.
		calls := uint64(0)
		for _, k := range res.Kinds {
			calls += k.Calls
		}
		fmt.Fprintf(out, "this process: %.1f CPU s (%.2f cores of %d), %.0f µs per answered call; load after %s\n",
			cpu.Seconds(), cpu.Seconds()/res.Elapsed.Seconds(), runtime.NumCPU(),
			float64(cpu.Microseconds())/float64(max(calls, 1)), loadAvg())
	}
	if p := c.String("memprofile"); p != "" {
		if err := writeHeapProfile(p); err != nil {
			return err
		}
	}
	if runErr == nil && res != nil {
		// A control plane that answers a call with a transport error or an
		// unexpected status (not a stale attempt's 409) has a fault.
		var failed uint64
		for _, k := range res.Kinds {
			failed += k.Errors
		}
		if failed > 0 {
			return fmt.Errorf("%d calls failed (errors above)", failed)
		}
	}
	return runErr
}

// cpuTime is the user and system CPU time this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func every(d time.Duration) string {
	if d == 0 {
		return "back to back"
	}
	return "every " + d.String()
}

func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("--memprofile: %w", err)
	}
	defer f.Close()
	if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
		return fmt.Errorf("--memprofile: writing %s: %w", path, err)
	}
	return nil
}

// loadAvg returns the 1, 5 and 15 minute load averages (Linux), or "?".
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// rateLine draws the generator's progress: one line redrawn in place on a
// terminal, else a plain line every 5 seconds.
type rateLine struct {
	w     io.Writer
	tty   bool
	mu    sync.Mutex
	prev  loadgen.Snapshot
	last  time.Duration // plain mode: when a line was last printed
	drawn int
}

func newRateLine(w io.Writer, tty bool) *rateLine { return &rateLine{w: w, tty: tty} }

func (p *rateLine) show(s loadgen.Snapshot) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.tty && s.Elapsed-p.last < 5*time.Second {
		return
	}
	line := s.Line(p.prev)
	p.prev, p.last = s, s.Elapsed
	if p.tty {
		pad := max(p.drawn-len(line), 0)
		fmt.Fprintf(p.w, "\r%s%s", line, strings.Repeat(" ", pad))
		p.drawn = len(line)
		return
	}
	fmt.Fprintln(p.w, line)
}

func (p *rateLine) done() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tty && p.drawn > 0 {
		fmt.Fprintln(p.w)
	}
}

// localControl is the in-process control plane of a bench run.
type localControl struct {
	urls                   []string
	internalKey, publicKey string
	desc                   string
	blob                   *blob.Dir // the control planes' object store
	// analyze, for PostgreSQL, gathers the planner's statistics of the
	// bench schema's tables (see runBenchControl).
	analyze func(context.Context) error
	closers []func()
}

func (l *localControl) close() {
	for i := len(l.closers) - 1; i >= 0; i-- {
		l.closers[i]()
	}
}

// startLocalControl starts --replicas control planes on loopback ports
// over one store, configured as musetalk control configures its own.
func startLocalControl(ctx context.Context, c *cli.Context) (_ *localControl, err error) {
	lc := &localControl{}
	defer func() {
		if err != nil {
			lc.close()
		}
	}()
	var tag [8]byte
	if _, err := rand.Read(tag[:]); err != nil {
		return nil, fmt.Errorf("making keys: %w", err)
	}
	lc.internalKey = "bench-internal-" + hex.EncodeToString(tag[:])
	lc.publicKey = "bench-public-" + hex.EncodeToString(tag[:])

	dir := c.String("work-dir")
	if dir == "" {
		if dir, err = os.MkdirTemp("", "musetalk-bench-control-"); err != nil {
			return nil, fmt.Errorf("making the work directory: %w", err)
		}
		lc.closers = append(lc.closers, func() { os.RemoveAll(dir) })
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("making the work directory: %w", err)
	}
	logFile, err := os.Create(filepath.Join(dir, "control.log"))
	if err != nil {
		return nil, fmt.Errorf("creating the control plane's log: %w", err)
	}
	lc.closers = append(lc.closers, func() { logFile.Close() })
	log, err := telemetry.NewLogger(logFile, c.String("log-format"), c.String("log-level"))
	if err != nil {
		return nil, err
	}

	replicas := c.Int("replicas")
	db := c.String("db")
	pg := strings.HasPrefix(db, "postgres://") || strings.HasPrefix(db, "postgresql://")
	switch {
	case replicas < 1:
		return nil, fmt.Errorf("--replicas %d: must be at least 1", replicas)
	case replicas > 1 && !pg:
		return nil, errors.New("--replicas needs a postgres:// --db: SQLite serves one control plane")
	}
	var stores []store.Store
	if pg {
		schema, drop, err := newBenchSchema(ctx, db)
		if err != nil {
			return nil, err
		}
		lc.closers = append(lc.closers, drop)
		for range replicas {
			st, err := openPostgresIn(ctx, db, schema)
			if err != nil {
				return nil, err
			}
			lc.closers = append(lc.closers, func() { st.Close() })
			stores = append(stores, st)
		}
		lc.analyze = func(ctx context.Context) error { return analyzeSchema(ctx, db, schema) }
		lc.desc = fmt.Sprintf("PostgreSQL schema %s, %d replica(s)", schema, replicas)
	} else {
		if db == "" {
			db = filepath.Join(dir, "control.db")
		}
		st, err := sqlite.Open(ctx, db)
		if err != nil {
			return nil, fmt.Errorf("opening SQLite database %s: %w", db, err)
		}
		lc.closers = append(lc.closers, func() { st.Close() })
		stores = append(stores, st)
		lc.desc = "SQLite " + db
	}
	objects := filepath.Join(dir, "blobs")
	if parent := c.String("objects-dir"); parent != "" {
		if objects, err = os.MkdirTemp(parent, "musetalk-bench-objects-"); err != nil {
			return nil, fmt.Errorf("--objects-dir: %w", err)
		}
		lc.closers = append(lc.closers, func() { os.RemoveAll(objects) })
	}
	bs, err := blob.NewDir(objects)
	if err != nil {
		return nil, fmt.Errorf("opening the object directory: %w", err)
	}
	lc.closers = append(lc.closers, func() { bs.Close() })
	lc.blob = bs
	tr, err := telemetry.TracingFromEnv(ctx, os.Getenv, "musetalk-control", version)
	if err != nil {
		return nil, err
	}
	lc.closers = append(lc.closers, func() { tr.Shutdown(context.WithoutCancel(ctx)) })

	for i, st := range stores {
		srv, err := control.New(control.Config{
			Store: st, Blob: bs, Logger: log.With("replica", i), TracerProvider: tr.Provider,
			InternalAPIKey: lc.internalKey, PublicAPIKeys: []string{lc.publicKey},
		})
		if err != nil {
			return nil, fmt.Errorf("configuring the control plane: %w", err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("listening on a loopback port: %w", err)
		}
		sctx, stop := context.WithCancel(context.WithoutCancel(ctx))
		served := make(chan error, 1)
		go func() { served <- serveUntilDone(sctx, ln, srv.Handler(), srv.RunSweeper, srv.RunDashboard) }()
		lc.closers = append(lc.closers, func() {
			stop()
			if err := <-served; err != nil {
				log.Error("bench: serving the control plane", "error", err)
			}
		})
		lc.urls = append(lc.urls, "http://"+ln.Addr().String())
	}
	lc.desc += ", objects in " + objects + ", control.log in " + dir
	return lc, nil
}

// newBenchSchema makes an empty schema with a random name in the database
// at url and returns a function that drops it.
func newBenchSchema(ctx context.Context, url string) (string, func(), error) {
	var tag [6]byte
	if _, err := rand.Read(tag[:]); err != nil {
		return "", nil, fmt.Errorf("naming the bench schema: %w", err)
	}
	schema := "musetalk_bench_" + hex.EncodeToString(tag[:])
	// The pool's parser takes the pool's settings (pool_max_conns) too.
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return "", nil, fmt.Errorf("opening PostgreSQL: parsing --db: %w", err)
	}
	conn, err := pgx.ConnectConfig(ctx, cfg.ConnConfig.Copy())
	if err != nil {
		return "", nil, fmt.Errorf("connecting to PostgreSQL to make schema %s: %w", schema, err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `CREATE SCHEMA `+schema); err != nil {
		return "", nil, fmt.Errorf("creating schema %s: %w", schema, err)
	}
	drop := func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		conn, err := pgx.ConnectConfig(dctx, cfg.ConnConfig.Copy())
		if err != nil {
			fmt.Fprintf(os.Stderr, "bench: connecting to drop schema %s: %v\n", schema, err)
			return
		}
		defer conn.Close(dctx)
		if _, err := conn.Exec(dctx, `DROP SCHEMA `+schema+` CASCADE`); err != nil {
			fmt.Fprintf(os.Stderr, "bench: dropping schema %s: %v\n", schema, err)
		}
	}
	return schema, drop, nil
}

// analyzeSchema runs ANALYZE on the store's tables in schema.
func analyzeSchema(ctx context.Context, url, schema string) error {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return fmt.Errorf("parsing --db: %w", err)
	}
	conn, err := pgx.ConnectConfig(ctx, cfg.ConnConfig.Copy())
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, `ANALYZE `+schema+`.jobs, `+schema+`.attempts, `+schema+`.workers`)
	return err
}

// openPostgresIn opens one replica's store whose search_path is schema,
// as musetalk control opens it (the same pool settings).
func openPostgresIn(ctx context.Context, url, schema string) (*postgres.Store, error) {
	sep := "?"
	if strings.Contains(url, "?") {
		sep = "&"
	}
	st, err := postgres.Open(ctx, url+sep+"search_path="+schema)
	if err != nil {
		return nil, fmt.Errorf("opening PostgreSQL: %w", err)
	}
	return st, nil
}
