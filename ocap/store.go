package ocap

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
)

// Store keeps the swiss numbers of labelled registrations (Node.RegisterAs)
// in a file, so that a program restarted with the same store registers its
// objects under the same sturdyrefs. It stores secrets: the file is created
// readable by its owner only.
//
// The file is JSON: {"version": 1, "swiss": {"LABEL": "SWISS", ...}} with
// each swiss number in unpadded base64url. Every change rewrites it whole
// (a temporary file renamed over it), so a crash leaves the old or the new
// version, never a mix. A Store is safe for concurrent use; two processes
// must not share one file.
type Store struct {
	path string

	mu    sync.Mutex // guards swiss and the file
	swiss map[string][]byte
}

type storeFile struct {
	Version int               `json:"version"`
	Swiss   map[string]string `json:"swiss"`
}

// OpenStore opens the store at path, creating an empty one if the file
// does not exist.
func OpenStore(path string) (*Store, error) {
	st := &Store{path: path, swiss: map[string][]byte{}}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return st, st.saveLocked()
	}
	if err != nil {
		return nil, fmt.Errorf("ocap: opening store: %w", err)
	}
	var f storeFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("ocap: store %s is not valid JSON: %w", path, err)
	}
	if f.Version != 1 {
		return nil, fmt.Errorf("ocap: store %s has version %d, want 1", path, f.Version)
	}
	for label, text := range f.Swiss {
		s, err := base64.RawURLEncoding.DecodeString(text)
		if err != nil || len(s) < minSwissSize {
			return nil, fmt.Errorf("ocap: store %s: label %q has a malformed swiss number", path, label)
		}
		st.swiss[label] = s
	}
	return st, nil
}

// swissFor returns the swiss number stored under label, making and saving
// a new one if there is none.
func (st *Store) swissFor(label string) ([]byte, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if s, ok := st.swiss[label]; ok {
		return s, nil
	}
	s, err := newSwiss()
	if err != nil {
		return nil, err
	}
	st.swiss[label] = s
	if err := st.saveLocked(); err != nil {
		delete(st.swiss, label)
		return nil, err
	}
	return s, nil
}

// forget removes label, if present, and saves.
func (st *Store) forget(label string) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	if _, ok := st.swiss[label]; !ok {
		return nil
	}
	delete(st.swiss, label)
	return st.saveLocked()
}

// Labels returns the labels in the store.
func (st *Store) Labels() []string {
	st.mu.Lock()
	defer st.mu.Unlock()
	out := make([]string, 0, len(st.swiss))
	for l := range st.swiss {
		out = append(out, l)
	}
	return out
}

func (st *Store) saveLocked() error {
	f := storeFile{Version: 1, Swiss: map[string]string{}}
	for label, s := range st.swiss {
		f.Swiss[label] = base64.RawURLEncoding.EncodeToString(s)
	}
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(st.path), ".ocap-store-*")
	if err != nil {
		return fmt.Errorf("ocap: saving store: %w", err)
	}
	defer os.Remove(tmp.Name()) // after a successful rename this fails harmlessly
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("ocap: saving store: %w", err)
	}
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("ocap: saving store: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("ocap: saving store: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("ocap: saving store: %w", err)
	}
	if err := os.Rename(tmp.Name(), st.path); err != nil {
		return fmt.Errorf("ocap: saving store: %w", err)
	}
	return nil
}
