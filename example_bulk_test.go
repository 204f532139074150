package bokbok_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"

	"github.com/bokbok-go/bokbok"
)

// Upload is a request with a large binary field. As a Bulk, the handler's
// copy of Data is the received message's own bytes, not a copy of them.
type Upload struct {
	Name string
	Data bokbok.Bulk
}

// A Bulk field carries large binary data without a copy on the receiving
// side; on the wire it is the same as a []byte, so either end may use
// either type.
func ExampleBulk() {
	ctx := context.Background()
	mux := bokbok.NewMux()
	bokbok.Handle(mux, "store", func(ctx context.Context, up Upload) (string, error) {
		// up.Data is valid until this handler returns: hash it here, or
		// copy it (bytes.Clone) to keep it.
		sum := sha256.Sum256(up.Data)
		return fmt.Sprintf("%s: %d bytes, sha256 %x", up.Name, len(up.Data), sum[:6]), nil
	})
	conn, shutdown := exampleMuxServe(ctx, mux)
	defer shutdown()

	var reply string
	data := bytes.Repeat([]byte("bokbok"), 1<<18) // 1.5 MiB
	if err := conn.Invoke(ctx, "store", Upload{Name: "photo.raw", Data: data}, &reply); err != nil {
		panic(err)
	}
	fmt.Println(reply)
	// Output: photo.raw: 1572864 bytes, sha256 0b3ba95e23da
}
