cwlVersion: v1.2
class: CommandLineTool
baseCommand: [wc, -l]
inputs:
  file:
    type: File
    inputBinding: {position: 1}
stdout: $(inputs.file.nameroot).count
outputs:
  count: {type: stdout}
