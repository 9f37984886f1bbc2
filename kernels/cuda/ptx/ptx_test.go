package ptx

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/avatargen/musetalk/internal/testenv"
	"github.com/avatargen/musetalk/kernels/cuda/internal/kernelgen"
)

func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		testenv.Missing(t, "%s not installed (Debian package nvidia-cuda-toolkit, non-free)", name)
	}
	return p
}

// sources lists the modules the kernel sources make: each name without
// .cu, and name_f16 for a source declaring its kernels with KNAME.
func sources(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("..", "src", "*.cu"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no kernel sources: %v", err)
	}
	var out []string
	for _, f := range files {
		text, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		name := strings.TrimSuffix(filepath.Base(f), ".cu")
		out = append(out, name)
		if kernelgen.Generic(text) {
			for _, st := range kernelgen.Storages[1:] {
				out = append(out, name+st.Suffix)
			}
		}
	}
	slices.Sort(out)
	return out
}

// TestPTXIsCurrent regenerates the PTX with nvcc and compares it with the
// committed files: a kernel edited without `go generate`, or a stale file,
// fails here.
func TestPTXIsCurrent(t *testing.T) {
	needTool(t, "nvcc")
	gen, err := os.ReadFile("gen.go")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`var targets = \[\]string\{([^}]*)\}`).FindSubmatch(gen)
	if m == nil {
		t.Fatal("gen.go has no targets list")
	}
	var genTargets []string
	for _, q := range strings.Split(string(m[1]), ",") {
		if s, err := strconv.Unquote(strings.TrimSpace(q)); err == nil {
			genTargets = append(genTargets, s)
		}
	}
	if !slices.Equal(genTargets, Targets) {
		t.Fatalf("gen.go compiles for %v, Targets says %v", genTargets, Targets)
	}
	out := t.TempDir()
	cmd := exec.Command("go", "run", "gen.go")
	cmd.Env = append(os.Environ(), "PTX_OUT="+out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go run gen.go: %v\n%s", err, b)
	}
	fresh, _ := filepath.Glob(filepath.Join(out, "*.ptx"))
	committed, _ := filepath.Glob("*.ptx")
	var names []string
	for _, f := range fresh {
		names = append(names, filepath.Base(f))
	}
	if !slices.Equal(names, committed) {
		t.Errorf("generated files %v, committed %v: run `go generate ./kernels/cuda/ptx/` and commit", names, committed)
	}
	for _, name := range names {
		got, _ := os.ReadFile(filepath.Join(out, name))
		want, _ := os.ReadFile(name)
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from what nvcc makes of its source: run `go generate ./kernels/cuda/ptx/` and commit", name)
		}
	}
	for _, tg := range Targets {
		if got := Sources(tg); !slices.Equal(got, sources(t)) {
			t.Errorf("Sources(%s) = %v, want every kernel source %v", tg, got, sources(t))
		}
		for _, src := range sources(t) {
			if text, ok := Module(src, tg); !ok || !strings.Contains(text, ".target") {
				t.Errorf("no embedded PTX for %s, %s", src, tg)
			}
		}
	}
}

// Limits every kernel must meet on the cards it will run on.
const (
	maxRegisters  = 255      // per thread, any sm_70+ card
	maxStaticSMEM = 48 << 10 // bytes of static shared memory per block
)

var (
	entryRe = regexp.MustCompile(`Compiling entry function '([^']+)' for '(sm_\d+)'`)
	regsRe  = regexp.MustCompile(`Used (\d+) registers`)
	smemRe  = regexp.MustCompile(`(\d+) bytes smem`)
	spillRe = regexp.MustCompile(`(\d+) bytes spill stores, (\d+) bytes spill loads`)
)

// cardsOf lists, per target, the real architectures whose cards load that
// target's PTX (see TargetFor): Volta and Turing take compute_70, the
// fleet's Ampere and Ada cards and the data centre's A100/H100 compute_80.
var cardsOf = map[string][]string{
	"compute_70": {"sm_70", "sm_75"},
	"compute_80": {"sm_80", "sm_86", "sm_89", "sm_90"},
}

// TestPTXASLimits assembles every embedded module for the cards that load
// it with ptxas and checks each kernel's registers,
// static shared memory and spills, logging the figures.
func TestPTXASLimits(t *testing.T) {
	ptxas := needTool(t, "ptxas")
	type run struct {
		file, sm string
		out      []byte
		err      error
	}
	var runs []*run
	for _, src := range sources(t) {
		for _, tg := range Targets {
			for _, sm := range cardsOf[tg] {
				runs = append(runs, &run{file: FileName(src, tg), sm: sm})
			}
		}
	}
	// ptxas runs are independent: a few at once.
	sem := make(chan struct{}, 2*runtime.NumCPU())
	var wg sync.WaitGroup
	for _, r := range runs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			r.out, r.err = exec.Command(ptxas, "-arch="+r.sm, "-v", "-o", os.DevNull, r.file).CombinedOutput()
		}()
	}
	wg.Wait()
	for _, r := range runs {
		if r.err != nil {
			t.Fatalf("ptxas %s %s: %v\n%s", r.file, r.sm, r.err, r.out)
		}
		checkPTXAS(t, r.file, string(r.out))
	}
}

// checkPTXAS reads ptxas -v output: one block per kernel, starting at its
// "Compiling entry function" line.
func checkPTXAS(t *testing.T, file, out string) {
	t.Helper()
	kernels := 0
	var cur, sm string
	for _, line := range strings.Split(out, "\n") {
		if m := entryRe.FindStringSubmatch(line); m != nil {
			cur, sm = m[1], m[2]
			kernels++
			continue
		}
		if m := spillRe.FindStringSubmatch(line); m != nil && (m[1] != "0" || m[2] != "0") {
			t.Errorf("%s %s %s: spills (%s)", file, cur, sm, strings.TrimSpace(line))
		}
		if m := regsRe.FindStringSubmatch(line); m != nil {
			regs, _ := strconv.Atoi(m[1])
			smem := 0
			if s := smemRe.FindStringSubmatch(line); s != nil {
				smem, _ = strconv.Atoi(s[1])
			}
			if regs > maxRegisters || smem > maxStaticSMEM {
				t.Errorf("%s %s %s: %d registers, %d bytes static shared memory (limits %d, %d)", file, cur, sm, regs, smem, maxRegisters, maxStaticSMEM)
			}
			if testing.Verbose() {
				t.Logf("%s %s: %d registers, %d bytes smem", sm, cur, regs, smem)
			}
		}
	}
	if kernels == 0 {
		t.Errorf("%s: ptxas reported no kernel:\n%s", file, out)
	}
}
