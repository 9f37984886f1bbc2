// emu.h: the emulator runtime's interface to its Go driver (emu.go) and to
// the generated kernel trampolines (*_cu.c, kernels_table.c).
#ifndef EMU_H
#define EMU_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

// emu_kernel is one entry of the generated kernel table: the kernel's name,
// its parameter kinds (one letter each: p pointer, i int, u unsigned int,
// f float) and a trampoline that unpacks an argument array into the
// kernel's typed parameters and calls it on the current fiber.
typedef struct {
	const char *name;
	const char *sig;
	void (*run)(const uint64_t *args);
} emu_kernel;

extern const emu_kernel emu_kernels[];
extern const int emu_nkernels;

// Argument decoding for the trampolines: every argument travels as 64 bits.
static inline void *emu_arg_ptr(uint64_t a) { return (void *)(uintptr_t)a; }
static inline int emu_arg_i32(uint64_t a) { return (int)(int32_t)(uint32_t)a; }
static inline unsigned emu_arg_u32(uint64_t a) { return (unsigned)a; }
static inline float emu_arg_f32(uint64_t a) {
	uint32_t u = (uint32_t)a;
	float f;
	memcpy(&f, &u, 4);
	return f;
}

// emu_rt holds the fiber stacks and per-thread records one device reuses
// from launch to launch. It is used by one OS thread at a time.
typedef struct emu_rt emu_rt;

emu_rt *emu_rt_new(void);
void emu_rt_free(emu_rt *rt);

// emu_launch runs kernel k of the table on a grid of blocks, one block at a
// time, to completion. It returns 0, or -1 with a message in err when the
// runtime cannot run it (no memory for stacks) or the kernel failed (a
// trap, a barrier some threads never reach, a warp rendezvous with an
// exited lane).
int emu_launch(emu_rt *rt, int k, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
               size_t shared, const uint64_t *args, char *err, size_t errlen);

#endif
