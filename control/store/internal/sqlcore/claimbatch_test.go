package sqlcore

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/avatargen/musetalk/control/store"
)

func TestPick(t *testing.T) {
	var window []candidate
	for i := range store.CachedAvatarLookahead + 4 {
		window = append(window, candidate{id: fmt.Sprint("j", i), avatarID: fmt.Sprint("a", i), priority: 0})
	}
	window[0].priority, window[1].priority = 1, 1
	for _, tc := range []struct {
		name       string
		cands      []candidate
		cached     []string
		want       int
		wantCached bool
	}{
		{"no cached avatars: the first", window, nil, 0, false},
		{"empty names count for nothing", window, []string{""}, 0, false},
		{"cached, of the top priority", window, []string{"a1"}, 1, true},
		{"cached, but below the top priority", window, []string{"a5"}, 0, false},
		{"top priority taken: the next priority is the top", window[2:], []string{"a5"}, 3, true},
		{"past the lookahead: the first", window[2:], []string{fmt.Sprint("a", store.CachedAvatarLookahead+2)}, 0, false},
		{"the last one in the lookahead", window[2:], []string{fmt.Sprint("a", store.CachedAvatarLookahead+2), fmt.Sprint("a", store.CachedAvatarLookahead+1)}, store.CachedAvatarLookahead - 1, true},
	} {
		k, cached := pick(tc.cands, tc.cached)
		if k != tc.want || cached != tc.wantCached {
			t.Errorf("%s: pick = %d, %v; want %d, %v", tc.name, k, cached, tc.want, tc.wantCached)
		}
	}
}

func TestRounds(t *testing.T) {
	var calls []*batchCall[string, int]
	for _, k := range []string{"a", "b", "a", "c", "a", "b"} {
		calls = append(calls, &batchCall[string, int]{ctx: context.Background(), arg: k})
	}
	var got [][]string
	for _, r := range rounds(calls, func(k string) string { return k }) {
		var keys []string
		for _, c := range r {
			keys = append(keys, c.arg)
		}
		got = append(got, keys)
	}
	want := [][]string{{"a", "b", "c"}, {"a", "b"}, {"a"}}
	if !slices.EqualFunc(got, want, slices.Equal) {
		t.Errorf("rounds = %v, want %v", got, want)
	}
}

func TestLiveAnswersEndedCalls(t *testing.T) {
	ended, cancel := context.WithCancel(context.Background())
	cancel()
	a := &batchCall[string, int]{ctx: context.Background(), arg: "a", done: make(chan struct{})}
	b := &batchCall[string, int]{ctx: ended, arg: "b", done: make(chan struct{})}
	got := live([]*batchCall[string, int]{a, b})
	if len(got) != 1 || got[0] != a {
		t.Fatalf("live kept %d calls, want a alone", len(got))
	}
	select {
	case <-b.done:
		if b.err == nil {
			t.Error("the ended call was answered without an error")
		}
	default:
		t.Error("the ended call was not answered")
	}
}
