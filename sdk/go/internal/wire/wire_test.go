package wire

import (
	"bytes"
	"reflect"
	"testing"
)

func TestEncodeMatchesTheABIExample(t *testing.T) {
	got := EncodeMap([][2]string{{"a", "1"}, {"b", "22"}})
	want := []byte{
		2, 0, 0, 0,
		1, 0, 0, 0, 1, 0, 0, 0,
		1, 0, 0, 0, 2, 0, 0, 0,
		'a', 0, '1', 0, 'b', 0, '2', '2', 0,
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

func TestRoundTripKeepsOrderDuplicatesAndEmptyValues(t *testing.T) {
	pairs := [][2]string{{":path", "/x"}, {"set-cookie", "a=1"}, {"set-cookie", "b=2"}, {"x-empty", ""}}
	back, err := DecodeMap(EncodeMap(pairs))
	if err != nil || !reflect.DeepEqual(back, pairs) {
		t.Fatalf("got %v, %v", back, err)
	}
}

func TestDecodeRefusesTruncatedMaps(t *testing.T) {
	raw := EncodeMap([][2]string{{"name", "value"}})
	for cut := 1; cut < len(raw); cut++ {
		if _, err := DecodeMap(raw[:cut]); err == nil {
			t.Fatalf("a map cut at %d bytes decoded", cut)
		}
	}
	if _, err := DecodeMap([]byte{0xff, 0xff, 0xff, 0x7f}); err == nil {
		t.Fatal("a huge count decoded")
	}
}

func TestEmptyInputIsAnEmptyMap(t *testing.T) {
	pairs, err := DecodeMap(nil)
	if err != nil || len(pairs) != 0 {
		t.Fatalf("got %v, %v", pairs, err)
	}
}

func TestPathsAreNULSeparated(t *testing.T) {
	if got := string(EncodePath([]string{"request", "headers", "x"})); got != "request\x00headers\x00x" {
		t.Fatalf("got %q", got)
	}
}
