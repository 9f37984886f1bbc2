// emu.c: the emulator's execution model. Every CUDA thread of a block is a
// cooperative fiber with its own small stack; a scheduler on the calling
// OS thread resumes the block's runnable fibers in turn until all have
// finished. __syncthreads and the warp rendezvous (shuffles, votes,
// __syncwarp) park a fiber until its peers arrive; the last one to arrive
// releases the others and carries on. Blocks run one after another, which
// is why __shared__ statics (thread-local, so concurrent devices on other
// OS threads do not collide) serve as each block's shared memory. Fibers
// run in index order between barriers in even blocks, in reverse order in
// odd ones.
#define _GNU_SOURCE
#include "cuda_emu.h"
#include "emu.h"

// The runtime names the built-in variables as fields, not as the current
// fiber's.
#undef threadIdx
#undef blockIdx
#undef blockDim
#undef gridDim

#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#if defined(__x86_64__) && !defined(EMU_UCONTEXT)
#define EMU_ASM_SWITCH 1
#else
#include <ucontext.h>
#endif

_Thread_local struct emu_thread_pub *emu_self;

enum { ST_RUN, ST_BAR, ST_WARP, ST_DONE };

// STACK_BYTES is each fiber's stack; a PROT_NONE page below it turns an
// overflow into a fault instead of silent corruption.
#define STACK_BYTES (64 * 1024)

typedef struct emu_block emu_block;

typedef struct {
#ifdef EMU_ASM_SWITCH
	void *sp;
#else
	ucontext_t uc;
#endif
} fiber_ctx;

typedef struct {
	struct emu_thread_pub pub; // first: emu_self points here
	emu_block *b;
	int state;
	int warp, lane;
	char *stack; // lowest address of the usable stack
	fiber_ctx ctx;
} emu_thread;

typedef struct {
	unsigned exists;   // lanes this warp has (a block's last warp may be partial)
	unsigned arrived;  // lanes parked in a rendezvous
	uint32_t slot[32]; // one value per lane, exchanged by shuffles and votes
} emu_warp;

struct emu_block {
	struct emu_block_ids ids;
	emu_thread *t;
	int n;
	emu_warp *w;
	int at_bar; // threads parked in __syncthreads
	void *dyn;
	size_t dynbytes;
	fiber_ctx sched;
	void (*run)(const uint64_t *);
	const uint64_t *args;
	int failed;
	char msg[256];
};

struct emu_rt {
	char *stacks;
	size_t stacks_len, per_stack;
	int nstacks;
	emu_thread *t;
	emu_warp *w;
	int nwarps;
	void *dyn;
	size_t dyncap;
};

#ifdef EMU_ASM_SWITCH
// emu_switch saves the callee-saved registers and floating-point control
// words on the current stack, stores the stack pointer in *save, and
// resumes the fiber whose saved stack pointer is next.
void emu_switch(void **save, void *next);
__asm__(".text\n"
        ".p2align 4\n"
        ".globl emu_switch\n"
        ".hidden emu_switch\n"
        ".type emu_switch, @function\n"
        "emu_switch:\n"
        "\tpushq %rbp\n"
        "\tpushq %rbx\n"
        "\tpushq %r12\n"
        "\tpushq %r13\n"
        "\tpushq %r14\n"
        "\tpushq %r15\n"
        "\tsubq $8, %rsp\n"
        "\tstmxcsr (%rsp)\n"
        "\tfnstcw 4(%rsp)\n"
        "\tmovq %rsp, (%rdi)\n"
        "\tmovq %rsi, %rsp\n"
        "\tldmxcsr (%rsp)\n"
        "\tfldcw 4(%rsp)\n"
        "\taddq $8, %rsp\n"
        "\tpopq %r15\n"
        "\tpopq %r14\n"
        "\tpopq %r13\n"
        "\tpopq %r12\n"
        "\tpopq %rbx\n"
        "\tpopq %rbp\n"
        "\tret\n"
        ".size emu_switch, .-emu_switch\n");
#endif

static void fiber_main(void);

static inline emu_thread *cur(void) { return (emu_thread *)emu_self; }

// fiber_init makes t start at fiber_main when next resumed.
static void fiber_init(emu_thread *t) {
#ifdef EMU_ASM_SWITCH
	// The frame emu_switch pops: control words, six registers, then the
	// return address fiber_main, placed so that the stack is aligned as
	// after a call. Above it a zero return address ends backtraces.
	uintptr_t top = ((uintptr_t)t->stack + STACK_BYTES) & ~(uintptr_t)15;
	uint64_t *ret = (uint64_t *)(top - 16);
	ret[1] = 0;
	ret[0] = (uint64_t)(uintptr_t)fiber_main;
	uint64_t *sp = ret - 7;
	memset(sp, 0, 7 * sizeof *sp);
	uint32_t *fpctl = (uint32_t *)sp;
	fpctl[0] = 0x1f80; // MXCSR: all exceptions masked, round to nearest
	fpctl[1] = 0x037f; // x87 control word: the same
	t->ctx.sp = sp;
#else
	getcontext(&t->ctx.uc);
	t->ctx.uc.uc_stack.ss_sp = t->stack;
	t->ctx.uc.uc_stack.ss_size = STACK_BYTES;
	t->ctx.uc.uc_link = NULL;
	makecontext(&t->ctx.uc, fiber_main, 0);
#endif
}

// to_thread resumes t from the scheduler; to_sched parks t.
static inline void to_thread(emu_block *b, emu_thread *t) {
	emu_self = &t->pub;
#ifdef EMU_ASM_SWITCH
	emu_switch(&b->sched.sp, t->ctx.sp);
#else
	swapcontext(&b->sched.uc, &t->ctx.uc);
#endif
}

static inline void to_sched(emu_thread *t) {
#ifdef EMU_ASM_SWITCH
	emu_switch(&t->ctx.sp, t->b->sched.sp);
#else
	swapcontext(&t->ctx.uc, &t->b->sched.uc);
#endif
}

static void fiber_main(void) {
	emu_thread *t = cur();
	t->b->run(t->b->args);
	t = cur();
	t->state = ST_DONE;
	to_sched(t);
	abort(); // a finished fiber is never resumed
}

void emu_trap(const char *msg) {
	emu_thread *t = cur();
	emu_block *b = t->b;
	if (!b->failed) {
		b->failed = 1;
		snprintf(b->msg, sizeof b->msg, "thread (%u,%u,%u): %s", t->pub.threadIdx.x, t->pub.threadIdx.y,
		         t->pub.threadIdx.z, msg);
	}
	t->state = ST_DONE;
	to_sched(t);
	abort(); // the scheduler abandons a failed block
}

void emu_syncthreads(void) {
	emu_thread *t = cur();
	emu_block *b = t->b;
	if (++b->at_bar == b->n) {
		b->at_bar = 0;
		for (int i = 0; i < b->n; i++)
			if (b->t[i].state == ST_BAR)
				b->t[i].state = ST_RUN;
		return;
	}
	t->state = ST_BAR;
	to_sched(t);
}

// warp_wait parks t until every existing lane of mask in its warp has
// arrived; the last to arrive releases the others.
static void warp_wait(emu_thread *t, unsigned mask) {
	emu_block *b = t->b;
	emu_warp *w = &b->w[t->warp];
	unsigned me = 1u << t->lane;
	if (!(mask & me))
		emu_trap("warp-synchronous call with a mask that leaves out the calling lane");
	unsigned need = mask & w->exists;
	w->arrived |= me;
	if ((w->arrived & need) != need) {
		t->state = ST_WARP;
		to_sched(t);
		return;
	}
	w->arrived &= ~need;
	emu_thread *lane0 = &b->t[t->warp * 32];
	for (int l = 0; l < 32; l++)
		if ((need >> l & 1u) && l != t->lane)
			lane0[l].state = ST_RUN;
}

void emu_syncwarp(unsigned mask) { warp_wait(cur(), mask); }

uint32_t emu_shfl(int mode, unsigned mask, uint32_t v, int arg) {
	emu_thread *t = cur();
	emu_warp *w = &t->b->w[t->warp];
	int src;
	switch (mode) {
	case EMU_SHFL_IDX:
		src = arg & 31;
		break;
	case EMU_SHFL_UP:
		src = t->lane - arg;
		break;
	case EMU_SHFL_DOWN:
		src = t->lane + arg;
		break;
	default:
		src = t->lane ^ arg;
		break;
	}
	w->slot[t->lane] = v;
	warp_wait(t, mask); // every lane has written its slot
	uint32_t r = v;
	if (src >= 0 && src < 32 && ((mask & w->exists) >> src & 1u))
		r = w->slot[src];
	warp_wait(t, mask); // every lane has read before any writes again
	return r;
}

unsigned emu_ballot(unsigned mask, int pred) {
	emu_thread *t = cur();
	emu_warp *w = &t->b->w[t->warp];
	w->slot[t->lane] = pred != 0;
	warp_wait(t, mask);
	unsigned need = mask & w->exists, r = 0;
	for (int l = 0; l < 32; l++)
		if ((need >> l & 1u) && w->slot[l])
			r |= 1u << l;
	warp_wait(t, mask);
	return r;
}

int emu_vote_all(unsigned mask, int pred) {
	emu_thread *t = cur();
	unsigned need = mask & t->b->w[t->warp].exists;
	return (emu_ballot(mask, pred) & need) == need;
}

void *emu_dynamic_shared(void) { return cur()->b->dyn; }

// stuck describes why no fiber of b can run although some have not
// finished.
static void stuck(emu_block *b) {
	int done = 0, bar = 0, warp = 0, firstDone = -1, firstWarp = -1;
	for (int i = 0; i < b->n; i++) {
		switch (b->t[i].state) {
		case ST_DONE:
			done++;
			if (firstDone < 0)
				firstDone = i;
			break;
		case ST_BAR:
			bar++;
			break;
		case ST_WARP:
			warp++;
			if (firstWarp < 0)
				firstWarp = i;
			break;
		}
	}
	if (warp > 0) {
		emu_warp *w = &b->w[firstWarp / 32];
		snprintf(b->msg, sizeof b->msg,
		         "warp %d: lanes %#010x wait in a warp-synchronous call that other lanes of its mask "
		         "never join (%d threads exited, %d wait at __syncthreads)",
		         firstWarp / 32, w->arrived, done, bar);
		return;
	}
	emu_thread *t = &b->t[firstDone];
	snprintf(b->msg, sizeof b->msg,
	         "__syncthreads reached by %d of %d threads: %d exited without it, e.g. thread (%u,%u,%u)", bar, b->n,
	         done, t->pub.threadIdx.x, t->pub.threadIdx.y, t->pub.threadIdx.z);
}

// run_block runs one block to completion: 0, or -1 with b->msg set.
// Between barriers it runs the fibers in index order, or in reverse when
// reverse is set: alternating blocks catches more of the races a missing
// __syncthreads leaves, whichever thread reads what another writes.
static int run_block(emu_block *b, int reverse) {
	for (int i = 0; i < b->n; i++) {
		b->t[i].state = ST_RUN;
		fiber_init(&b->t[i]);
	}
	for (int i = 0; i < (b->n + 31) / 32; i++)
		b->w[i].arrived = 0;
	b->at_bar = 0;
	if (b->dynbytes > 0)
		memset(b->dyn, 0xff, b->dynbytes); // NaN: shared memory starts undefined
	for (;;) {
		int ran = 0;
		for (int j = 0; j < b->n; j++) {
			emu_thread *t = &b->t[reverse ? b->n - 1 - j : j];
			if (t->state != ST_RUN)
				continue;
			ran = 1;
			to_thread(b, t);
			if (b->failed)
				return -1;
		}
		if (!ran)
			break;
	}
	for (int i = 0; i < b->n; i++) {
		if (b->t[i].state != ST_DONE) {
			stuck(b);
			return -1;
		}
	}
	return 0;
}

// reserve grows rt to n fibers and shared bytes of dynamic shared memory.
static int reserve(emu_rt *rt, int n, size_t shared) {
	if (n > rt->nstacks) {
		size_t page = (size_t)sysconf(_SC_PAGESIZE);
		size_t per = (STACK_BYTES + page - 1) / page * page + page;
		size_t len = per * (size_t)n;
		char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (p == MAP_FAILED)
			return -1;
		for (int i = 0; i < n; i++)
			if (mprotect(p + (size_t)i * per, page, PROT_NONE) != 0) {
				munmap(p, len);
				return -1;
			}
		emu_thread *t = realloc(rt->t, (size_t)n * sizeof *t);
		if (t == NULL) {
			munmap(p, len);
			return -1;
		}
		if (rt->stacks != NULL)
			munmap(rt->stacks, rt->stacks_len);
		rt->stacks = p;
		rt->stacks_len = len;
		rt->per_stack = per;
		rt->t = t;
		rt->nstacks = n;
		for (int i = 0; i < n; i++)
			t[i].stack = p + (size_t)i * per + page;
	}
	int nw = (n + 31) / 32;
	if (nw > rt->nwarps) {
		emu_warp *w = realloc(rt->w, (size_t)nw * sizeof *w);
		if (w == NULL)
			return -1;
		rt->w = w;
		rt->nwarps = nw;
	}
	if (shared > rt->dyncap) {
		void *d = aligned_alloc(256, (shared + 255) / 256 * 256);
		if (d == NULL)
			return -1;
		free(rt->dyn);
		rt->dyn = d;
		rt->dyncap = shared;
	}
	return 0;
}

emu_rt *emu_rt_new(void) { return calloc(1, sizeof(emu_rt)); }

void emu_rt_free(emu_rt *rt) {
	if (rt == NULL)
		return;
	if (rt->stacks != NULL)
		munmap(rt->stacks, rt->stacks_len);
	free(rt->t);
	free(rt->w);
	free(rt->dyn);
	free(rt);
}

int emu_launch(emu_rt *rt, int k, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
               size_t shared, const uint64_t *args, char *err, size_t errlen) {
	if (k < 0 || k >= emu_nkernels) {
		snprintf(err, errlen, "no kernel %d", k);
		return -1;
	}
	int n = (int)(bx * by * bz);
	if (reserve(rt, n, shared) != 0) {
		snprintf(err, errlen, "no memory for %d fibers and %zu bytes of shared memory", n, shared);
		return -1;
	}
	emu_block b;
	memset(&b, 0, sizeof b);
	b.ids.blockDim = (dim3){bx, by, bz};
	b.ids.gridDim = (dim3){gx, gy, gz};
	b.t = rt->t;
	b.n = n;
	b.w = rt->w;
	b.dyn = rt->dyn;
	b.dynbytes = shared;
	b.run = emu_kernels[k].run;
	b.args = args;
	for (int i = 0; i < n; i++) {
		emu_thread *t = &b.t[i];
		t->pub.threadIdx = (uint3){(unsigned)i % bx, (unsigned)i / bx % by, (unsigned)i / (bx * by)};
		t->pub.blk = &b.ids;
		t->b = &b;
		t->warp = i / 32;
		t->lane = i % 32;
	}
	for (int i = 0; i < (n + 31) / 32; i++) {
		int lanes = n - i * 32 < 32 ? n - i * 32 : 32;
		b.w[i].exists = lanes == 32 ? 0xffffffffu : (1u << lanes) - 1u;
	}
	int rc = 0;
	for (unsigned z = 0; z < gz && rc == 0; z++)
		for (unsigned y = 0; y < gy && rc == 0; y++)
			for (unsigned x = 0; x < gx && rc == 0; x++) {
				b.ids.blockIdx = (uint3){x, y, z};
				if (run_block(&b, (x + y + z) & 1) != 0) {
					snprintf(err, errlen, "block (%u,%u,%u): %s", x, y, z, b.msg);
					rc = -1;
				}
			}
	emu_self = NULL;
	return rc;
}
