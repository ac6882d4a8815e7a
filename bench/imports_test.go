package bench

import (
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestImportsOnlyCodec enforces the design's import direction: bench measures
// any broker, so it may import Tern's codec and nothing else of Tern's.
func TestImportsOnlyCodec(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		af, err := parser.ParseFile(token.NewFileSet(), f, src, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range af.Imports {
			p := strings.Trim(imp.Path.Value, `"`)
			if strings.HasPrefix(p, "github.com/ternmq/tern/") && p != "github.com/ternmq/tern/codec" {
				t.Errorf("%s imports %s: bench may import only github.com/ternmq/tern/codec", f, p)
			}
		}
	}
}
