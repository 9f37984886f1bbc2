package main

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/avatargen/musetalk/blob"
	"github.com/avatargen/musetalk/control"
	"github.com/avatargen/musetalk/control/store/sqlite"
	"github.com/avatargen/musetalk/musetalk"
	"github.com/avatargen/musetalk/musetalk/modeldir"
	"github.com/avatargen/musetalk/protocol"
	"github.com/avatargen/musetalk/telemetry"
	"github.com/avatargen/musetalk/worker"
	"github.com/avatargen/musetalk/worker/preview"
)

// The embedded worker's registry entry.
const (
	upWorkerID = "local"
	upGPUClass = "local"
)

// defaultControlURL is where `musetalk submit` looks by default: the
// address `musetalk up` listens on by default.
const defaultControlURL = "http://127.0.0.1:8080"

func upCommand() *cli.Command {
	flags := []cli.Flag{
		&cli.StringFlag{Name: "addr", Value: "127.0.0.1:8080", Usage: "listen address of the API; a non-loopback address (e.g. :8080) gets a generated API key unless --api-keys is set", EnvVars: []string{"MUSETALK_ADDR"}},
		&cli.StringFlag{Name: "data-dir", Value: "./musetalk-data", Usage: "directory for the SQLite database (control.db), the objects (blobs/) and the worker's files (work/)", EnvVars: []string{"MUSETALK_DATA_DIR"}},
		&cli.StringFlag{Name: "api-keys", Usage: "comma-separated keys for the public API (default: open on loopback, one generated key otherwise)", EnvVars: []string{"MUSETALK_API_KEYS"}},
		&cli.DurationFlag{Name: "poll-interval", Value: 2 * time.Second, Usage: "the worker's heartbeat and claim period", EnvVars: []string{"MUSETALK_POLL_INTERVAL"}},
		&cli.StringFlag{Name: "work-dir", Usage: "directory for the worker's per-attempt files (default: <data-dir>/work)", EnvVars: []string{"MUSETALK_WORK_DIR"}},
		&cli.DurationFlag{Name: "stall-timeout", Value: 15 * time.Minute, Usage: "interrupt an attempt that reports no progress for this long (0 disables)", EnvVars: []string{"MUSETALK_STALL_TIMEOUT"}},
	}
	return &cli.Command{
		Name:  "up",
		Usage: "run everything in one process: control plane, local object store and one worker",
		Description: `The embedded default: the control plane on SQLite in --data-dir, objects
in <data-dir>/blobs, and one in-process worker (id "local") rendering with
--engine. Jobs and results survive a restart.

The public API listens on --addr. On a loopback address (the default,
127.0.0.1:8080) it is open to local clients; on any other address it
needs a key: --api-keys, or else a key generated at start and printed once.
The worker's key is generated at every start and never shown. The worker
serves /health on --health-addr (:8000, as deployed workers do).

The control plane logs warnings and errors only, unless --log-level is
debug; the worker logs at --log-level.

With the musetalk engine, weights that --weights lacks are downloaded at
start, as by musetalk weights fetch (--endpoint and --s3fd-url as there):
the control plane answers at once, so jobs can be submitted and wait in
the queue, and the worker starts once the weights are there; --no-fetch
refuses to start instead. Without
access to the hub, use --weights DIR for weights already on disk,
musetalk weights tiny --out DIR then --weights DIR for tiny random
weights, or --engine preview for the service without weights.

The worker's networks run on --device at --precision (the device's
default: fp16 on cuda, fp32 on cpu; fp16 needs cuda), as musetalk worker's.

SIGTERM or SIGINT drains: no new claims, the running job gets --grace to
finish (a second signal releases it at once), then the server stops.

Submit with: musetalk submit --avatar FACE --audio SPEECH --out RESULT.mp4`,
		Flags:  append(append(flags, embeddedWorkerFlags()...), upWeightFlags()...),
		Action: runUp,
	}
}

// upWeightFlags decide what up does when the musetalk engine's weights are
// missing: fetch them (from weightSourceFlags) or, with --no-fetch, refuse.
func upWeightFlags() []cli.Flag {
	return append([]cli.Flag{
		&cli.BoolFlag{Name: "no-fetch", Usage: "do not download the musetalk engine's missing weights at start; refuse to start instead", EnvVars: []string{"MUSETALK_NO_FETCH"}},
	}, weightSourceFlags()...)
}

// upAlternatives ends the error of an up that has no weights and cannot
// fetch them.
const upAlternatives = `To start anyway:
  weights already on disk:  musetalk up --weights DIR
  tiny random weights:      musetalk weights tiny --out DIR, then musetalk up --weights DIR (the mouth region is noise)
  no weights at all:        musetalk up --engine preview (the preview engine: the avatar muxed with the audio)
  a Hugging Face mirror:    musetalk up --endpoint URL (or HF_ENDPOINT=URL), with --s3fd-url URL for S3FD's checkpoint`

// upWeightsToFetch checks the musetalk engine's weights, when that engine
// is selected: it returns the weight directory when files are missing and
// may be fetched, "" when there is nothing to fetch. Missing weights with
// --no-fetch, and a directory that cannot be checked, are errors that say
// how to start anyway.
func upWeightsToFetch(c *cli.Context) (string, error) {
	if !slices.Contains(c.StringSlice("engine"), musetalk.EngineName) {
		return "", nil
	}
	dir := cmp.Or(c.String("weights"), modeldir.Default())
	err := modeldir.Dir(dir).Check(musetalk.DefaultVersion)
	var missing *modeldir.MissingError
	switch {
	case err == nil:
		return "", nil
	case !errors.As(err, &missing):
		return "", fmt.Errorf("the musetalk engine's weights: %w", err)
	case c.Bool("no-fetch"):
		return "", fmt.Errorf("the musetalk engine has no weights (--no-fetch): %w\n%s", err, upAlternatives)
	}
	return dir, nil
}

// upFetchWeights fetches the files the weight directory lacks, as `weights
// fetch` does (same code, same progress display and checks). A failure
// says why and how to start anyway. SIGINT or SIGTERM stops the download;
// its .part files stay for the next start to resume.
func upFetchWeights(c *cli.Context, dir string) error {
	versions := []string{musetalk.DefaultVersion}
	var missing *modeldir.MissingError
	if err := modeldir.Dir(dir).Check(versions...); errors.As(err, &missing) {
		fmt.Fprintf(c.App.ErrWriter, "The musetalk engine's weights are missing from %s (%d files): fetching them before the worker starts (--no-fetch turns this off).\n",
			dir, len(missing.Files))
	}
	ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := fetchWeights(ctx, c.App.ErrWriter, dir, versions, weightSourceFrom(c)); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("fetching the musetalk engine's weights: %w (the next start resumes the download)", err)
		}
		return fmt.Errorf("the musetalk engine's weights could not be fetched into %s: %w\n%s", dir, err, upAlternatives)
	}
	return nil
}

// embeddedWorkerFlags are the worker command's own flags that make sense
// for the embedded worker: the engine and its settings, --health-addr and
// --grace. The seed's variables (control URL, keys, B2, ids) and the
// directories are left out: `up` sets those itself.
func embeddedWorkerFlags() []cli.Flag {
	skip := map[string]bool{"b2-endpoint": true, "blob-dir": true, "work-dir": true}
	for _, v := range seedVars {
		skip[v.flag] = true
	}
	var out []cli.Flag
	for _, f := range workerCommand().Flags {
		if !skip[f.Names()[0]] {
			out = append(out, f)
		}
	}
	return out
}

func runUp(c *cli.Context) error {
	log, err := logger(c)
	if err != nil {
		return err
	}
	ctlLog, err := upControlLogger(c)
	if err != nil {
		return err
	}
	if c.Duration("poll-interval") <= 0 {
		return errors.New("--poll-interval: must be positive")
	}
	for _, name := range c.StringSlice("engine") {
		if name != musetalk.EngineName && name != preview.Name {
			return fmt.Errorf("--engine %q: unknown engine (available: %s, %s)", name, musetalk.EngineName, preview.Name)
		}
	}
	workerLog := log.With("component", "worker")
	settings, err := engineSettingsFrom(c, workerLog)
	if err != nil {
		return err
	}
	// Weights to fetch are fetched once the control plane answers, so a
	// job submitted meanwhile waits in the queue; refusals come first.
	fetchDir, err := upWeightsToFetch(c)
	if err != nil {
		return err
	}
	ctx := c.Context
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)

	dataDir := c.String("data-dir")
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		return fmt.Errorf("making the data directory: %w", err)
	}
	dbPath := filepath.Join(dataDir, "control.db")
	st, err := sqlite.Open(ctx, dbPath)
	if err != nil {
		return fmt.Errorf("opening SQLite database %s: %w", dbPath, err)
	}
	defer st.Close()
	blobs, err := blob.NewDir(filepath.Join(dataDir, "blobs"))
	if err != nil {
		return fmt.Errorf("opening the object directory: %w", err)
	}
	defer blobs.Close()
	tel, err := telemetry.FromEnv(ctx, os.Getenv, telemetry.Service{Name: "musetalk-up", Version: version, Instance: upWorkerID})
	if err != nil {
		return err
	}
	defer tel.Shutdown(context.WithoutCancel(ctx))
	tr := tel.Tracing

	engines := c.StringSlice("engine")
	wcfg := worker.Config{
		WorkerType:     protocol.WorkerMain,
		Provider:       worker.ProviderOther,
		GPUClass:       upGPUClass,
		PollInterval:   c.Duration("poll-interval"),
		WorkerID:       upWorkerID,
		Blob:           blobs,
		HealthAddr:     c.String("health-addr"),
		WorkDir:        c.String("work-dir"),
		Grace:          c.Duration("grace"),
		Version:        version,
		Logger:         workerLog,
		TracerProvider: tr.Provider,
		MeterProvider:  tel.Metrics.Provider,
	}
	if wcfg.WorkDir == "" {
		wcfg.WorkDir = filepath.Join(dataDir, "work")
	}
	for _, name := range engines {
		e, err := newEngineWith(name, settings)
		if err != nil {
			return err
		}
		wcfg.Engines = append(wcfg.Engines, e)
	}

	internalKey, err := randomKey()
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", c.String("addr"))
	if err != nil {
		return fmt.Errorf("listening on %s: %w", c.String("addr"), err)
	}
	defer ln.Close()
	// The worker's health listener is opened here so that a taken port
	// fails the start and the banner shows the real address.
	healthLn, err := net.Listen("tcp", wcfg.HealthAddr)
	if err != nil {
		return fmt.Errorf("listening on --health-addr %s: %w", wcfg.HealthAddr, err)
	}
	defer healthLn.Close()
	wcfg.HealthListener = healthLn
	local := loopbackURL(ln.Addr())
	publicKeys, generatedKey, err := upPublicKeys(splitKeys(c.String("api-keys")), ln.Addr())
	if err != nil {
		return err
	}
	srv, err := control.New(control.Config{
		Store:             st,
		Blob:              blobs,
		Logger:            ctlLog.With("component", "control"),
		TracerProvider:    tr.Provider,
		InternalAPIKey:    internalKey,
		PublicAPIKeys:     publicKeys,
		HeartbeatInterval: wcfg.PollInterval,
		StallTimeout:      c.Duration("stall-timeout"),
	})
	if err != nil {
		return fmt.Errorf("configuring the control plane: %w", err)
	}
	wcfg.OrchestratorBaseURL = local
	wcfg.InternalAPIKey = telemetry.Secret(internalKey)
	w, err := worker.New(wcfg)
	if err != nil {
		return fmt.Errorf("configuring the worker: %w", err)
	}

	// The server outlives the worker: a draining worker still reports to
	// it. It stops once the worker is done, or ends the worker if it fails
	// on its own.
	srvCtx, stopServer := context.WithCancel(context.WithoutCancel(ctx))
	defer stopServer()
	workerCtx, stopWorker := context.WithCancel(ctx)
	defer stopWorker()
	served := make(chan error, 1)
	go func() {
		err := serveUntilDone(srvCtx, ln, srv.Handler(), srv.RunSweeper, srv.RunDashboard)
		if srvCtx.Err() == nil {
			stopWorker()
			w.Stop()
		}
		served <- err
	}()

	if fetchDir != "" {
		fmt.Fprintf(c.App.ErrWriter, "The control plane answers at %s; jobs submitted now wait in the queue until the worker starts.\n", local)
		if err := upFetchWeights(c, fetchDir); err != nil {
			stopServer()
			<-served
			return err
		}
	}

	log.Info("musetalk up", "addr", ln.Addr().String(), "data_dir", dataDir, "engines", strings.Join(engines, ","),
		"health", healthLn.Addr().String(), "public_api_auth", len(publicKeys) > 0)
	printUpBanner(c.App.Writer, upBanner{
		url: local, listen: ln.Addr(), dataDir: dataDir, engines: engines,
		healthAddr: healthLn.Addr().String(), generatedKey: generatedKey, keysGiven: len(publicKeys) > 0 && generatedKey == "",
	})

	werr := w.RunWithSignals(workerCtx, sigs)
	if werr != nil {
		werr = fmt.Errorf("embedded worker: %w", werr)
	}
	stopServer()
	serr := <-served
	log.Info("musetalk up stopped")
	return errors.Join(werr, serr)
}

// upPublicKeys decides who may use the public API: the keys given, else
// nobody needs one on a loopback address, else one key is generated (and
// returned as generated, to be shown once).
func upPublicKeys(given []string, addr net.Addr) (keys []string, generated string, err error) {
	if len(given) > 0 || isLoopback(addr) {
		return given, "", nil
	}
	if generated, err = randomKey(); err != nil {
		return nil, "", err
	}
	return []string{generated}, generated, nil
}

// upControlLogger is the embedded control plane's logger: warnings and
// errors only, since a client waiting for a job would fill the terminal
// with its polls, unless --log-level is debug.
func upControlLogger(c *cli.Context) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(c.String("log-level"))); err != nil {
		return nil, fmt.Errorf("log level %q: want debug, info, warn or error", c.String("log-level"))
	}
	if lv > slog.LevelDebug {
		lv = max(lv, slog.LevelWarn)
	}
	return telemetry.NewLogger(os.Stderr, c.String("log-format"), lv.String())
}

// upBanner is what `up` tells its user at start.
type upBanner struct {
	url          string // loopback URL of the API
	listen       net.Addr
	dataDir      string
	engines      []string
	healthAddr   string
	generatedKey string // printed once; empty when none was generated
	keysGiven    bool   // --api-keys was set
}

// printUpBanner writes where everything is and how to submit a job.
func printUpBanner(w io.Writer, b upBanner) {
	auth := "open to clients on this machine"
	switch {
	case b.generatedKey != "":
		auth = "needs the API key below"
	case b.keysGiven:
		auth = "needs one of --api-keys"
	}
	fmt.Fprintf(w, "musetalk is up: control plane, object store and one worker in this process.\n")
	fmt.Fprintf(w, "  API      %s (listening on %s; %s)\n", b.url, b.listen, auth)
	fmt.Fprintf(w, "  web      %s/dashboard/ (the operator dashboard; log in with the API key, if any)\n", b.url)
	fmt.Fprintf(w, "  data     %s\n", b.dataDir)
	fmt.Fprintf(w, "  worker   %q with engines %s; health on %s\n", upWorkerID, strings.Join(b.engines, ", "), b.healthAddr)
	if b.generatedKey != "" {
		fmt.Fprintf(w, "  API key  %s\n           (shown only now; set --api-keys to choose your own)\n", b.generatedKey)
	}
	submit := "musetalk submit"
	if b.url != defaultControlURL {
		submit += " --control " + b.url
	}
	auth = ""
	switch {
	case b.generatedKey != "":
		submit += " --api-key " + b.generatedKey
		auth = `-H "Authorization: Bearer ` + b.generatedKey + `" `
	case b.keysGiven:
		submit += " --api-key $KEY"
		auth = `-H "Authorization: Bearer $KEY" `
	}
	fmt.Fprintf(w, "Submit a job and wait for the result:\n  %s --avatar face.png --audio speech.wav --out result.mp4\n", submit)
	fmt.Fprintf(w, "or with curl:\n  curl %s-F avatar=@face.png -F audio=@speech.wav %s%s\n",
		auth, b.url, protocol.Path(protocol.SubmitRoute))
	fmt.Fprintf(w, "Stop with Ctrl-C (the running job gets --grace to finish).\n")
}

// randomKey returns 32 random bytes in hex.
func randomKey() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("making a key: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// isLoopback reports whether addr accepts connections from this machine
// only.
func isLoopback(addr net.Addr) bool {
	tcp, ok := addr.(*net.TCPAddr)
	return ok && tcp.IP.IsLoopback()
}

// loopbackURL is the http URL this machine reaches addr at: the address
// itself, or 127.0.0.1 when it listens on every interface.
func loopbackURL(addr net.Addr) string {
	tcp, ok := addr.(*net.TCPAddr)
	if !ok {
		return "http://" + addr.String()
	}
	host := tcp.IP.String()
	if tcp.IP.IsUnspecified() {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, strconv.Itoa(tcp.Port))
}
