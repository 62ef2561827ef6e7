// A chit exec worker in Go: greets the name the task carries.
//
// Build and run it with:
//
//	go build -o greet examples/exec/greet.go
//	chit worker exec greet -- ./greet
package main

import (
	"encoding/json"
	"fmt"
	"os"
)

type task struct {
	InputData struct {
		Name string `json:"name"`
	} `json:"inputData"`
}

type result struct {
	Status string            `json:"status"`
	Output map[string]string `json:"output"`
	Logs   []string          `json:"logs"`
}

func main() {
	var t task
	if err := json.NewDecoder(os.Stdin).Decode(&t); err != nil {
		fmt.Fprintln(os.Stderr, "reading the task:", err)
		os.Exit(2)
	}
	name := t.InputData.Name
	if name == "" {
		name = "World"
	}
	json.NewEncoder(os.Stdout).Encode(result{
		Status: "COMPLETED",
		Output: map[string]string{"message": "Hello " + name},
		Logs:   []string{"Processed greeting for " + name},
	})
}
